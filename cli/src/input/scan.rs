//! Scanning the two things a line of OTLP/JSON is mostly made of, string bodies and decimal
//! timestamps, sixteen bytes at a time rather than byte by byte.

/// Where the string body starting at `i` ends (its closing quote), or `None` at an escape, a
/// control character or the end of the line.
pub(super) fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    while i + 16 <= b.len() {
        let hits = specials16(&b[i..i + 16]);
        if hits != 0 {
            let at = i + hits.trailing_zeros() as usize;
            return (b[at] == b'"').then_some(at);
        }
        i += 16;
    }
    string_end_swar(b, i)
}

/// A bit per byte of `block` that is a quote, a backslash or a control character.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn specials16(block: &[u8]) -> u32 {
    use std::arch::x86_64::*;
    assert_eq!(block.len(), 16);
    // SAFETY: `block` holds the 16 bytes the unaligned load reads; SSE2, which every
    // intrinsic here needs, is part of every x86_64 target.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Bytes below 0x20, unsigned: flipping the top bit makes the signed compare do it.
        let flip = _mm_set1_epi8(i8::MIN);
        let control = _mm_cmplt_epi8(_mm_xor_si128(v, flip), _mm_set1_epi8((0x20 ^ 0x80) as i8));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

/// [`string_end`] eight bytes at a time, for other targets and the end of a line.
fn string_end_swar(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The lowest byte each test flags is exact; bytes above it may be flagged falsely, so the
    // byte-by-byte loop below decides from there.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        let hits = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if hits != 0 {
            i += (hits.trailing_zeros() / 8) as usize;
            break;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => return Some(i),
            b'\\' => return None,
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
    None
}

/// `text` as a decimal `u64`, as `str::parse` reads it. Nineteen digits or fewer cannot
/// overflow, so those (every Unix time in nanoseconds until 2286) skip the checks per digit.
pub(super) fn decimal_u64(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.is_empty() || b.len() > 19 {
        return text.parse().ok();
    }
    let mut v = 0u64;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            // A sign, or not a number: the standard parser decides.
            return text.parse().ok();
        }
        v = v * 10 + u64::from(d);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn string_ends_are_found_as_a_byte_by_byte_scan_finds_them() {
        let naive = |b: &[u8], i: usize| {
            b[i..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .filter(|&k| b[i + k] == b'"')
                .map(|k| i + k)
        };
        let alphabet = [b'a', b'"', b'\\', 0x1f, 0x20, 0x7f, 0x80, 0xff, b'0', 0x00];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        // Under Miri, which checks the block loads stay inside the line, fewer.
        let rounds = if cfg!(miri) { 300 } else { 20_000 };
        for _ in 0..rounds {
            // Up to 40 bytes: past two whole blocks of sixteen, then the eight-byte tail.
            let len = (xorshift(&mut x) % 41) as usize;
            // Mostly plain bytes, so that the specials fall at every place of a block.
            let bytes: Vec<u8> = (0..len)
                .map(|_| match xorshift(&mut x) % 16 {
                    k @ 0..=9 => alphabet[k as usize],
                    _ => b'a',
                })
                .collect();
            for i in 0..=len {
                assert_eq!(
                    string_end(&bytes, i),
                    naive(&bytes, i),
                    "{bytes:?} from {i}"
                );
                assert_eq!(string_end_swar(&bytes, i), naive(&bytes, i));
            }
        }
    }

    #[test]
    fn decimals_read_as_the_standard_parser_reads_them() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut cases: Vec<String> = [
            "",
            "0",
            "00",
            "007",
            "+5",
            "-5",
            "1a",
            " 1",
            "18446744073709551615",
            "18446744073709551616",
            "9999999999999999999",
            "99999999999999999999",
            "0000000000000000000001",
            "1764300000000000000",
            "٣",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..20_000 {
            let v = xorshift(&mut x) >> (xorshift(&mut x) % 64);
            cases.push(v.to_string());
            cases.push(format!("{v}x"));
        }
        for c in &cases {
            assert_eq!(decimal_u64(c), c.parse::<u64>().ok(), "{c:?}");
        }
    }
}
