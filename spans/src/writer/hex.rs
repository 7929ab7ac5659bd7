//! Lower-case hex of span and trace ids, as the trace-event file writes them: every slice has
//! three or more ids, so they are converted eight digits at a time rather than one by one.

/// The eight nibbles of `x`, one to a byte, the most significant in the first byte of the
/// big-endian bytes, each turned into its ASCII digit.
fn digits8(x: u32) -> [u8; 8] {
    const LOW_NIBBLES: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    let x = u64::from(x);
    let x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    let x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    let x = (x | (x << 4)) & LOW_NIBBLES;
    // 1 in each byte whose nibble is 10 or more: adding 6 carries it into bit 4.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    // '0' + d, and for a letter 'a' - '0' - 10 more; no byte exceeds 'f', so none carries.
    (x + 0x3030_3030_3030_3030 + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

fn digits16(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&digits8((v >> 32) as u32));
    out[8..].copy_from_slice(&digits8(v as u32));
    out
}

/// `v` as 16 lower-case hex digits.
pub(crate) fn push_hex64(out: &mut String, v: u64) {
    push_digits(out, &digits16(v));
}

/// `v` as 32 lower-case hex digits.
pub(crate) fn push_hex128(out: &mut String, v: u128) {
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(&digits16((v >> 64) as u64));
    buf[16..].copy_from_slice(&digits16(v as u64));
    push_digits(out, &buf);
}

/// Appends digits made by [`digits8`]; a UTF-8 check on them cost as much as making them.
fn push_digits(out: &mut String, digits: &[u8]) {
    debug_assert!(digits.iter().all(u8::is_ascii_hexdigit));
    // SAFETY: `digits8` yields only the ASCII bytes '0'..='9' and 'a'..='f' (the tests check
    // every nibble at every place against the standard formatter), and ASCII is UTF-8.
    out.push_str(unsafe { std::str::from_utf8_unchecked(digits) });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_the_formatters() {
        let mut next = crate::util::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut values = vec![0, 1, 9, 10, 15, 16, u64::MAX, 0x0123_4567_89ab_cdef];
        // Miri runs the unchecked conversion on fewer.
        let rounds = if cfg!(miri) { 200 } else { 10_000 };
        for _ in 0..rounds {
            let x = next();
            values.push(x);
            // Every nibble alone, at every place.
            values.push((x % 16) << (4 * (x / 16 % 16)));
        }
        for v in values {
            let mut out = String::new();
            push_hex64(&mut out, v);
            assert_eq!(out, format!("{v:016x}"));
            let wide = (u128::from(v) << 64) | u128::from(v.rotate_left(17));
            out.clear();
            push_hex128(&mut out, wide);
            assert_eq!(out, format!("{wide:032x}"));
        }
    }
}
