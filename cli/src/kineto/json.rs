//! Just enough JSON, by bytes, to walk a trace file too large to parse whole: the extent of one
//! value, the members of one object, a copy with the whitespace between tokens dropped, and
//! decimal numbers read and written exactly. Only structure is followed here (strings and
//! bracket depth); whether the text is JSON is left to serde_json, which sees every event
//! before anything of it is written. On any bytes these functions answer, never panic.

use std::io::{self, Read};
use std::ops::Range;

/// Bytes asked of the input per read.
const CHUNK: usize = 256 << 10;
/// The largest single value (one event, or a top-level member other than the events) read;
/// past it the file is refused rather than held whole.
pub(super) const MAX_VALUE: usize = 256 << 20;

/// Why a value's extent was not found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// The bytes end inside it.
    Incomplete,
    /// Not a JSON value, for this reason.
    Bad(&'static str),
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\n' | b'\r' | b'\t')
}

/// The first index at or after `i` that is not whitespace (or `b.len()`).
pub(super) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|&c| is_ws(c)) {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string whose opening quote is at `b[i]`.
#[inline]
fn string_end(b: &[u8], i: usize) -> Result<usize, Scan> {
    let mut j = i + 1;
    // Most strings of a trace are short (member names, phases): looked at byte by byte before
    // the vector search, which costs more than it saves on a few bytes.
    let short = b.len().min(j + 24);
    while j < short {
        match b[j] {
            b'"' => return Ok(j + 1),
            b'\\' => break,
            _ => j += 1,
        }
    }
    loop {
        let rest = b.get(j..).ok_or(Scan::Incomplete)?;
        let k = memchr::memchr2(b'"', b'\\', rest).ok_or(Scan::Incomplete)?;
        if rest[k] == b'"' {
            return Ok(j + k + 1);
        }
        // An escape: the byte after the backslash is never the closing quote.
        j += k + 2;
    }
}

/// The end (exclusive) of the JSON value that starts at `b[i]` (no whitespace before it).
/// A number or literal ends at the first delimiter after it, so one at the very end of `b`
/// is `Incomplete`.
pub(super) fn value_end(b: &[u8], i: usize) -> Result<usize, Scan> {
    match *b.get(i).ok_or(Scan::Incomplete)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while let Some(&c) = b.get(j) {
                match c {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(Scan::Incomplete)
        }
        b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
            let rest = &b[i..];
            rest.iter()
                .position(|&c| matches!(c, b',' | b'}' | b']') || is_ws(c))
                .map(|k| i + k)
                .ok_or(Scan::Incomplete)
        }
        _ => Err(Scan::Bad("expected a JSON value")),
    }
}

/// One member of an object: the key's text with its quotes, and the value's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Member {
    pub key: Range<usize>,
    pub value: Range<usize>,
}

/// The members of the object at the start of `o`, in order, into `out`; returns the object's
/// length (`o` may go on past it). One scan finds both, so an event is read once for them.
pub(super) fn members(o: &[u8], out: &mut Vec<Member>) -> Result<usize, Scan> {
    out.clear();
    if o.first() != Some(&b'{') {
        return Err(Scan::Bad("expected an object"));
    }
    let mut j = skip_ws(o, 1);
    match o.get(j) {
        Some(b'}') => return Ok(j + 1),
        None => return Err(Scan::Incomplete),
        Some(_) => {}
    }
    loop {
        match o.get(j) {
            Some(b'"') => {}
            Some(_) => return Err(Scan::Bad("expected a member's name")),
            None => return Err(Scan::Incomplete),
        }
        let key_end = string_end(o, j)?;
        let colon = skip_ws(o, key_end);
        match o.get(colon) {
            Some(b':') => {}
            Some(_) => return Err(Scan::Bad("expected ':' after a member's name")),
            None => return Err(Scan::Incomplete),
        }
        let v = skip_ws(o, colon + 1);
        let v_end = value_end(o, v)?;
        out.push(Member {
            key: j..key_end,
            value: v..v_end,
        });
        j = skip_ws(o, v_end);
        match o.get(j) {
            Some(b',') => j = skip_ws(o, j + 1),
            Some(b'}') => return Ok(j + 1),
            Some(_) => return Err(Scan::Bad("expected ',' or '}' after a member")),
            None => return Err(Scan::Incomplete),
        }
    }
}

/// Appends `s` with the whitespace outside its strings dropped: one line, however the
/// producer indented it.
pub(super) fn push_compact(out: &mut String, s: &str) {
    let b = s.as_bytes();
    let mut run = 0;
    let mut j = 0;
    while let Some(&c) = b.get(j) {
        if c == b'"' {
            j = string_end(b, j).unwrap_or(b.len());
        } else if is_ws(c) {
            // Whitespace and quotes are ASCII, so both ends are character boundaries.
            out.push_str(s.get(run..j).unwrap_or_default());
            j = skip_ws(b, j);
            run = j;
        } else {
            j += 1;
        }
    }
    out.push_str(s.get(run..).unwrap_or_default());
}

/// A string value's text (`raw` with its quotes): borrowed unless it holds escapes.
pub(super) fn string_value(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(inner.into());
    }
    serde_json::from_str::<String>(raw).ok().map(Into::into)
}

/// A plain non-negative JSON integer (no sign, fraction or exponent).
pub(super) fn plain_uint(t: &str) -> Option<u64> {
    if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// A JSON number of microseconds as whole nanoseconds, exactly when it has at most three
/// decimals (what Kineto writes), digits beyond the nanosecond rounded half away from zero.
/// `None` when it is not a number or is out of range.
pub(super) fn us_to_ns(t: &str) -> Option<i128> {
    let b = t.as_bytes();
    let (neg, mut i) = match b.first() {
        Some(b'-') => (true, 1),
        _ => (false, 0),
    };
    let mut mantissa: i128 = 0;
    let mut digits = 0u32;
    let mut decimals: i64 = 0;
    let mut seen_point = false;
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' => {
                if mantissa != 0 || c != b'0' {
                    digits += 1;
                }
                if digits > 36 {
                    return None;
                }
                mantissa = mantissa * 10 + i128::from(c - b'0');
                if seen_point {
                    decimals += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            b'e' | b'E' => break,
            _ => return None,
        }
        i += 1;
    }
    if i == usize::from(neg) {
        return None;
    }
    let mut exp: i64 = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let e = t.get(i + 1..)?;
        let e = e.strip_prefix('+').unwrap_or(e);
        exp = e.parse::<i64>().ok()?.clamp(-100, 100);
    }
    // ns = mantissa × 10^(exp − decimals + 3)
    let scale = exp - decimals + 3;
    let ns = if scale >= 0 {
        let p = 10i128.checked_pow(u32::try_from(scale).ok()?)?;
        mantissa.checked_mul(p)?
    } else if scale < -38 {
        0
    } else {
        let d = 10i128.pow(u32::try_from(-scale).ok()?);
        let (q, r) = (mantissa / d, mantissa % d);
        q + i128::from(r * 2 >= d)
    };
    Some(if neg { -ns } else { ns })
}

/// Appends `ns` as microseconds with three decimals: every nanosecond, no rounding.
pub(super) fn push_us(out: &mut String, ns: i128) {
    use std::fmt::Write as _;
    if ns < 0 {
        out.push('-');
    }
    let a = ns.unsigned_abs();
    let _ = write!(out, "{}.{:03}", a / 1000, a % 1000);
}

/// A byte stream read a chunk at a time, from which whole JSON values are taken as slices of
/// one buffer. The buffer holds the largest value taken so far and a chunk more.
pub(super) struct Source<R> {
    r: R,
    /// `buf[start..end]` is read and not yet taken; the rest is room for reads.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Line breaks in the bytes dropped from the buffer's front.
    dropped_lines: u64,
}

impl<R: Read> Source<R> {
    pub fn new(r: R) -> Source<R> {
        Source {
            r,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            dropped_lines: 0,
        }
    }

    /// Reads until at least `want` bytes past `start` are held, or the input ends.
    fn more(&mut self, want: usize) -> io::Result<()> {
        if self.start > 0 {
            self.dropped_lines += line_breaks(&self.buf[..self.start]);
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = want.max(self.end + CHUNK);
        if self.buf.len() < room {
            self.buf.resize(room, 0);
        }
        while !self.eof && self.end < want {
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn held(&self) -> &[u8] {
        &self.buf[..self.end]
    }

    /// The next byte that is not whitespace, not taken; `None` at the end of the input.
    pub fn peek(&mut self) -> io::Result<Option<u8>> {
        loop {
            self.start = skip_ws(self.held(), self.start);
            if let Some(&c) = self.held().get(self.start) {
                return Ok(Some(c));
            }
            if self.eof {
                return Ok(None);
            }
            self.more(CHUNK)?;
        }
    }

    /// Takes one byte (after [`peek`](Self::peek) showed it).
    pub fn bump(&mut self) {
        self.start = (self.start + 1).min(self.end);
    }

    /// Takes the value that starts at the next byte that is not whitespace, and lends it.
    pub fn value(&mut self) -> Result<&[u8], String> {
        self.take(|b, i| value_end(b, i).map(|end| end - i), true)
    }

    /// Takes the object that starts at the next byte that is not whitespace, its members into
    /// `members` (relative to its start), and lends it.
    pub fn object(&mut self, members: &mut Vec<Member>) -> Result<&[u8], String> {
        self.take(|b, i| self::members(&b[i..], members), false)
    }

    /// Takes what `len` finds the length of at the next byte that is not whitespace, reading
    /// more while it needs more; a `scalar` may end with the input.
    fn take(
        &mut self,
        mut len: impl FnMut(&[u8], usize) -> Result<usize, Scan>,
        scalar: bool,
    ) -> Result<&[u8], String> {
        if self.peek().map_err(|e| e.to_string())?.is_none() {
            return Err("the file ends where a value should be".into());
        }
        loop {
            match len(self.held(), self.start) {
                Ok(n) => {
                    let v = self.start..self.start + n;
                    self.start = v.end;
                    return Ok(&self.buf[v]);
                }
                Err(Scan::Bad(why)) => return Err(why.into()),
                Err(Scan::Incomplete) if self.eof => {
                    let v = self.start..self.end;
                    let open = self.buf.get(v.start).is_some_and(|c| b"\"[{".contains(c));
                    if !scalar || open {
                        return Err("the file is cut short inside a value".into());
                    }
                    self.start = v.end;
                    return Ok(&self.buf[v]);
                }
                Err(Scan::Incomplete) => {
                    let have = self.end - self.start;
                    if have > MAX_VALUE {
                        return Err(format!(
                            "a single value is larger than {} MiB",
                            MAX_VALUE >> 20
                        ));
                    }
                    // Twice what is held: a value that spans many chunks is scanned again only
                    // a few times.
                    self.more((2 * have).max(CHUNK))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }

    /// The line (from 1) the next byte not taken is on.
    pub fn line(&self) -> u64 {
        self.dropped_lines + line_breaks(&self.buf[..self.start]) + 1
    }

    /// The line the value just taken, `len` bytes long, started on.
    pub fn line_of_last(&self, len: usize) -> u64 {
        let at = self.start.saturating_sub(len);
        self.dropped_lines + line_breaks(&self.buf[..at]) + 1
    }
}

fn line_breaks(b: &[u8]) -> u64 {
    // Counted in bytes over runs short enough not to overflow one: the compiler then compares
    // and adds a whole vector of bytes a step, where a count in words took four.
    b.chunks(255)
        .map(|run| u64::from(run.iter().fold(0u8, |n, &c| n + u8::from(c == b'\n'))))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_end_where_json_says_whatever_their_strings_hold() {
        let t = br#"{"a": "x}\"]", "b": [1, {"c": "]"}], "d": -1.5e3} tail"#;
        assert_eq!(value_end(t, 0), Ok(t.len() - 5));
        assert_eq!(value_end(b"123,", 0), Ok(3));
        assert_eq!(value_end(b"true}", 0), Ok(4));
        assert_eq!(value_end(b"\"ab\\\"c\" ", 0), Ok(7));
        assert_eq!(value_end(b"123", 0), Err(Scan::Incomplete));
        assert_eq!(value_end(b"{\"a\": [1, 2", 0), Err(Scan::Incomplete));
        assert_eq!(value_end(b"\"ab\\", 0), Err(Scan::Incomplete));
        assert_eq!(value_end(b"", 0), Err(Scan::Incomplete));
        assert!(matches!(value_end(b"}", 0), Err(Scan::Bad(_))));
    }

    #[test]
    fn members_are_found_in_order_and_bad_objects_refused() {
        let o = br#"{ "ph" : "X", "p\"d": 1 ,"args":{"x":[1,2]} }"#;
        let mut m = Vec::new();
        assert_eq!(members(o, &mut m), Ok(o.len()));
        let text = |r: &Range<usize>| std::str::from_utf8(&o[r.clone()]).unwrap();
        let got: Vec<(&str, &str)> = m.iter().map(|m| (text(&m.key), text(&m.value))).collect();
        assert_eq!(
            got,
            [
                ("\"ph\"", "\"X\""),
                ("\"p\\\"d\"", "1"),
                ("\"args\"", "{\"x\":[1,2]}")
            ]
        );
        assert_eq!(members(b"{ } tail", &mut m), Ok(3));
        assert!(m.is_empty());
        assert_eq!(members(b"{\"a\": 1", &mut m), Err(Scan::Incomplete));
        for bad in [&b"{\"a\" 1}"[..], b"{1: 2}", b"{\"a\": 1 \"b\": 2}", b"[1]"] {
            assert!(
                members(bad, &mut m).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_compact_copy_keeps_strings_whole() {
        let mut out = String::new();
        push_compact(
            &mut out,
            "{\n    \"name\": \"a  b\\\" c\",\n    \"ts\": 1.5,\t\"é\" : [ 1 , 2 ]\n  }",
        );
        assert_eq!(out, "{\"name\":\"a  b\\\" c\",\"ts\":1.5,\"é\":[1,2]}");
    }

    #[test]
    fn microseconds_read_and_write_back_to_the_nanosecond() {
        for (t, ns) in [
            ("0", 0),
            ("1", 1_000),
            ("4999926000100.123", 4_999_926_000_100_123),
            ("1.5e3", 1_500_000),
            ("15E-1", 1_500),
            ("-2.25", -2_250),
            ("0.0004", 0),
            ("0.0005", 1),
            ("-0.0005", -1),
            ("1764300000000100.123", 1_764_300_000_000_100_123),
            ("1e-50", 0),
        ] {
            assert_eq!(us_to_ns(t), Some(ns), "{t}");
        }
        for bad in [
            "",
            "-",
            "1.2.3",
            "abc",
            "1e",
            "1e400000000000000000000",
            "\"1\"",
        ] {
            assert_eq!(us_to_ns(bad), None, "{bad}");
        }
        let mut s = String::new();
        push_us(&mut s, 4_999_926_000_100_123);
        s.push(' ');
        push_us(&mut s, -1_500);
        s.push(' ');
        push_us(&mut s, 7);
        assert_eq!(s, "4999926000100.123 -1.500 0.007");
    }

    #[test]
    fn names_and_strings_read_with_or_without_escapes() {
        assert_eq!(string_value("\"a\\nb\"").as_deref(), Some("a\nb"));
        assert_eq!(string_value("12"), None);
        assert_eq!(plain_uint("42"), Some(42));
        assert_eq!(plain_uint("-1"), None);
        assert_eq!(plain_uint("1.0"), None);
    }

    /// A reader that hands out one byte at a time: every value crosses reads.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((c, rest)), Some(b)) => {
                    *b = *c;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn a_source_takes_values_across_reads_and_counts_lines() {
        let text = b"[\n {\"a\": \"x\\\"y\"},\n 12 ,\n\n \"s\"\n]";
        let mut s = Source::new(Trickle(text));
        assert_eq!(s.peek().unwrap(), Some(b'['));
        s.bump();
        assert_eq!(s.value().unwrap(), b"{\"a\": \"x\\\"y\"}");
        assert_eq!(s.line_of_last(14), 2);
        assert_eq!(s.peek().unwrap(), Some(b','));
        s.bump();
        assert_eq!(s.value().unwrap(), b"12");
        s.peek().unwrap();
        s.bump();
        assert_eq!(s.value().unwrap(), b"\"s\"");
        assert_eq!(s.line(), 5);
        assert_eq!(s.peek().unwrap(), Some(b']'));
        s.bump();
        assert_eq!(s.peek().unwrap(), None);

        let mut cut = Source::new(Trickle(b"[{\"a\": [1, 2"));
        cut.peek().unwrap();
        cut.bump();
        assert!(cut.value().unwrap_err().contains("cut short"));
        let mut number_at_end = Source::new(Trickle(b" 17"));
        assert_eq!(number_at_end.value().unwrap(), b"17");

        // An object with its members, whichever byte a read ends on.
        let text = b"{ \"ph\" : \"X\" ,\n \"args\": {\"a\": [1, \"]\"]} }, {}";
        let mut s = Source::new(Trickle(text));
        let mut m = Vec::new();
        let o = s.object(&mut m).unwrap().to_vec();
        assert_eq!(o, &text[..text.len() - 4]);
        assert_eq!(m.len(), 2);
        assert_eq!(&o[m[1].value.clone()], b"{\"a\": [1, \"]\"]}");
        let mut cut = Source::new(Trickle(b"{ \"ph\" : \"X\" , "));
        assert!(cut.object(&mut m).unwrap_err().contains("cut short"));
    }
}
