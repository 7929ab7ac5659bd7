//! The payload of an array attribute: its elements packed one after another, so a reader needs
//! only the element type (the head's value-type bits) and the payload.
//!
//! Integers and floats take 8 bytes each (little-endian), booleans one byte, and a string a
//! 2-byte length then its bytes (each string cut to `MAX_STR_BYTES` at a char boundary). An array
//! whose elements do not all fit in [`MAX_ARRAY_BYTES`] keeps its leading elements that fit
//! whole; the head's `value` holds how many were packed.

use super::record::{flag, truncate_str, MAX_STR_BYTES};
use crate::args::Value;
use opentelemetry::{Array, StringValue};

/// Longest payload an array attribute may carry.
pub const MAX_ARRAY_BYTES: usize = 1024;

/// Packs an array value into `out`; returns its value-type bits, the number of elements packed
/// and the payload's length. `None` for a value that is not an array.
pub fn encode(v: &Value<'_>, out: &mut [u8; MAX_ARRAY_BYTES]) -> Option<(u8, u64, usize)> {
    let mut w = Writer { out, at: 0, n: 0 };
    let vt = match *v {
        Value::I64s(xs) => {
            xs.iter().take_while(|x| w.put(&x.to_le_bytes())).count();
            flag::VALUE_I64
        }
        Value::F64s(xs) => {
            xs.iter()
                .take_while(|x| w.put(&x.to_bits().to_le_bytes()))
                .count();
            flag::VALUE_F64
        }
        Value::Bools(xs) => {
            xs.iter().take_while(|x| w.put(&[u8::from(**x)])).count();
            flag::VALUE_BOOL
        }
        Value::Strs(xs) => {
            xs.iter().take_while(|s| w.put_str(s)).count();
            flag::VALUE_STR
        }
        Value::I64(_) | Value::F64(_) | Value::Bool(_) | Value::Str(_) => return None,
    };
    Some((vt, w.n, w.at))
}

struct Writer<'a> {
    out: &'a mut [u8; MAX_ARRAY_BYTES],
    at: usize,
    n: u64,
}

impl Writer<'_> {
    /// Appends one element's bytes if they fit; false (and nothing written) if not.
    fn put(&mut self, bytes: &[u8]) -> bool {
        let end = self.at + bytes.len();
        if end > MAX_ARRAY_BYTES {
            return false;
        }
        self.out[self.at..end].copy_from_slice(bytes);
        self.at = end;
        self.n += 1;
        true
    }

    fn put_str(&mut self, s: &str) -> bool {
        let s = truncate_str(s, MAX_STR_BYTES);
        let end = self.at + 2 + s.len();
        if end > MAX_ARRAY_BYTES {
            return false;
        }
        self.out[self.at..self.at + 2].copy_from_slice(&(s.len() as u16).to_le_bytes());
        self.out[self.at + 2..end].copy_from_slice(s.as_bytes());
        self.at = end;
        self.n += 1;
        true
    }
}

/// The array a payload holds: at most `count` elements of type `vt`, as many as the payload
/// holds whole (a payload cut short by a lost chunk gives the elements before the cut). Strings
/// that are not UTF-8 are read lossily.
pub fn decode(vt: u8, count: u64, payload: &[u8]) -> Array {
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let words = || {
        payload
            .chunks_exact(8)
            .take(count)
            .map(|c| u64::from_le_bytes(c.try_into().expect("an 8-byte chunk")))
    };
    match vt {
        flag::VALUE_I64 => Array::I64(words().map(|w| w as i64).collect()),
        flag::VALUE_F64 => Array::F64(words().map(f64::from_bits).collect()),
        flag::VALUE_BOOL => Array::Bool(payload.iter().take(count).map(|b| *b != 0).collect()),
        _ => {
            let mut out = Vec::new();
            let mut rest = payload;
            while out.len() < count && rest.len() >= 2 {
                let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
                let Some(text) = rest.get(2..2 + len) else {
                    break;
                };
                out.push(StringValue::from(
                    String::from_utf8_lossy(text).into_owned(),
                ));
                rest = &rest[2 + len..];
            }
            Array::String(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Value<'_>) -> (u64, Array) {
        let mut buf = [0u8; MAX_ARRAY_BYTES];
        let (vt, n, len) = encode(&v, &mut buf).expect("an array");
        (n, decode(vt, n, &buf[..len]))
    }

    #[test]
    fn every_element_type_round_trips() {
        assert_eq!(
            round_trip(Value::I64s(&[-1, 0, i64::MAX])),
            (3, Array::I64(vec![-1, 0, i64::MAX]))
        );
        assert_eq!(
            round_trip(Value::F64s(&[1.5, -0.0, f64::INFINITY])),
            (3, Array::F64(vec![1.5, -0.0, f64::INFINITY]))
        );
        assert_eq!(
            round_trip(Value::Bools(&[true, false])),
            (2, Array::Bool(vec![true, false]))
        );
        assert_eq!(
            round_trip(Value::Strs(&["stop", "", "länge"])),
            (
                3,
                Array::String(vec!["stop".into(), "".into(), "länge".into()])
            )
        );
        assert_eq!(round_trip(Value::Strs(&[])), (0, Array::String(vec![])));
        assert!(encode(&Value::I64(1), &mut [0u8; MAX_ARRAY_BYTES]).is_none());
    }

    #[test]
    fn a_long_array_keeps_the_leading_elements_that_fit_whole() {
        let ints: Vec<i64> = (0..1000).collect();
        let (n, got) = round_trip(Value::I64s(&ints));
        assert_eq!(n as usize, MAX_ARRAY_BYTES / 8);
        assert_eq!(got, Array::I64(ints[..MAX_ARRAY_BYTES / 8].to_vec()));

        // Strings of 2 + 100 bytes: ten fit in 1024, the eleventh does not fit whole.
        let word = "x".repeat(100);
        let words = vec![word.as_str(); 20];
        let (n, got) = round_trip(Value::Strs(&words));
        assert_eq!(n, 10);
        assert_eq!(got, Array::String(vec![word.clone().into(); 10]));

        // One string longer than a string attribute may be is cut as one would be.
        let long = "é".repeat(MAX_STR_BYTES);
        let (_, got) = round_trip(Value::Strs(&[long.as_str()]));
        let cut = truncate_str(&long, MAX_STR_BYTES).to_owned();
        assert_eq!(got, Array::String(vec![cut.into()]));
    }

    #[test]
    fn a_payload_cut_short_gives_the_elements_before_the_cut() {
        let mut buf = [0u8; MAX_ARRAY_BYTES];
        let (vt, n, len) = encode(&Value::Strs(&["abc", "defgh"]), &mut buf).unwrap();
        assert_eq!(
            decode(vt, n, &buf[..len - 1]),
            Array::String(vec!["abc".into()])
        );
        let (vt, n, len) = encode(&Value::I64s(&[7, 8]), &mut buf).unwrap();
        assert_eq!(decode(vt, n, &buf[..len - 3]), Array::I64(vec![7]));
        // A count larger than the payload holds reads only what is there.
        assert_eq!(decode(vt, u64::MAX, &buf[..len]), Array::I64(vec![7, 8]));
        // Stray bytes: an odd length word or a length past the end stop the reading.
        assert_eq!(
            decode(flag::VALUE_STR, 5, &[0xff, 0xff, b'a']),
            Array::String(vec![])
        );
    }
}
