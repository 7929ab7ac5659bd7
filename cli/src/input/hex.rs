//! Hex ids read eight digits at a time: every span carries two or three of them.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte that is at least `lo` (bytes below 0x80 only).
fn at_least(x: u64, lo: u8) -> u64 {
    x.wrapping_add(ONES * u64::from(0x80 - lo)) & HIGH
}

/// The value of eight hex digits, the first the most significant; `None` unless all eight are
/// `0-9`, `a-f` or `A-F`.
fn digits8(chunk: [u8; 8]) -> Option<u32> {
    let x = u64::from_be_bytes(chunk);
    if x & HIGH != 0 {
        return None;
    }
    let digit = at_least(x, b'0') & !at_least(x, b'9' + 1);
    // Folding to lower case is safe here: only letters are tested on it.
    let folded = x | (ONES * 0x20);
    let letter = at_least(folded, b'a') & !at_least(folded, b'f' + 1);
    if digit | letter != HIGH {
        return None;
    }
    // A digit's value is its low nibble; a letter's ('a' and 'A' end in 1) its low nibble + 9.
    let v = (x & (ONES * 0x0f)) + (letter >> 7) * 9;
    // Pairs of nibbles into bytes, bytes into halves, halves into the word.
    let v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    let v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    Some(((v | (v >> 16)) & 0xffff_ffff) as u32)
}

/// The value of `s`, 8, 16, 24 or 32 hex digits; `None` for anything else.
pub(crate) fn parse_hex(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 32 || b.len() % 8 != 0 {
        return None;
    }
    let mut v = 0u128;
    for chunk in b.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        v = v << 32 | u128::from(digits8(w)?);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_standard_parser_reads_and_nothing_else() {
        // Every byte value at every place of an otherwise valid id.
        for at in 0..16 {
            for c in 0..=255u8 {
                let mut b = *b"0123456789abcDEF";
                b[at] = c;
                let s = String::from_utf8_lossy(&b).into_owned();
                let want = if c.is_ascii_hexdigit() {
                    u128::from_str_radix(&s, 16).ok()
                } else {
                    None
                };
                assert_eq!(parse_hex(&s), want, "{s:?}");
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (u128::from(x) << 64) | u128::from(x.rotate_left(29));
            for s in [
                format!("{v:032x}"),
                format!("{v:032X}"),
                format!("{x:016x}"),
            ] {
                assert_eq!(parse_hex(&s), u128::from_str_radix(&s, 16).ok());
            }
        }
        for bad in ["", "0", "0123456", "012345678", "+1234567", "0x123456"] {
            assert_eq!(parse_hex(bad), None, "{bad:?}");
        }
    }
}
