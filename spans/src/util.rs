//! Small helpers the writer, the library and the command share: JSON string escaping, cutting
//! a string at a character boundary, the 64-bit mix, and the hasher built on it.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};

/// Appends `s` as a JSON string, quoted and escaped.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    // Runs that need no escape are copied whole.
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.push_str(&s[from..i]);
        from = i + 1;
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
    }
    out.push_str(&s[from..]);
    out.push('"');
}

/// Whether `b` holds a quote, a backslash or a control character, eight bytes at a time:
/// names and ids seldom do, and are then copied whole.
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Each test is exact as a whole (some byte is such), though not in which bytes it flags.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(w);
        let w = u64::from_le_bytes(bytes);
        let hits = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if hits != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// `s` cut to at most `max` bytes, at a character boundary.
#[inline]
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The splitmix64 finaliser: a bijection on u64 with full avalanche.
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A xorshift64 sequence from `seed` (not 0): cheap, reproducible inputs for tests.
#[doc(hidden)]
pub fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// A hasher for keys that are ids — rids, span ids, trace ids — in maps that only this process
/// fills: a 64-bit mix per word instead of SipHash's keyed rounds. Not for keys an attacker
/// chooses.
#[derive(Clone, Copy, Debug, Default)]
pub struct MixHash;

#[derive(Default)]
pub struct MixHasher(u64);

impl BuildHasher for MixHash {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher(0)
    }
}

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = mix64(self.0 ^ v);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn every_escaped_string_reads_back_as_itself() {
        let samples = [
            "",
            "plain",
            "\"",
            "\\",
            "end\\",
            "\u{7f}\u{0}\u{1f} ",
            "é\"ü\n€𝄞",
            "\t\r\n\"\\x",
        ];
        for text in samples {
            let mut s = String::new();
            json_str(&mut s, text);
            let back: String = serde_json::from_str(&s).unwrap();
            assert_eq!(back, text, "{s}");
        }
    }

    /// The eight-at-a-time test agrees with a byte-by-byte one wherever the special byte falls.
    #[test]
    fn escapes_are_found_at_every_place() {
        let special = |c: u8| c < 0x20 || c == b'"' || c == b'\\';
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let x = next();
            let len = (x % 30) as usize;
            let mut bytes = vec![b'a'; len];
            if len > 0 {
                let alphabet = [b'"', b'\\', 0x00, 0x1f, 0x20, b'!', b'#', b'[', b']', 0x7f];
                bytes[(x >> 8) as usize % len] = alphabet[(x >> 40) as usize % alphabet.len()];
            }
            assert_eq!(
                needs_escape(&bytes),
                bytes.iter().any(|&c| special(c)),
                "{bytes:?}"
            );
        }
    }
}
