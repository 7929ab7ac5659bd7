//! Closing a trace-event file cut short (the process was killed): the writer puts one event
//! per line with the separator before it, so dropping a partial last line and appending `]`
//! leaves a valid JSON array holding every whole event.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// What [`repair`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repaired {
    /// The file already ended with its closing bracket.
    AlreadyValid,
    /// The array was closed; `dropped_bytes` of a partial last event were cut first.
    Closed { dropped_bytes: u64 },
}

/// How far back from the end a partial last line is looked for.
const TAIL: u64 = 1 << 20;

/// Makes the trace-event file at `path` a valid JSON array, in place.
pub fn repair(path: &Path) -> io::Result<Repaired> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(TAIL);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    f.read_to_end(&mut tail)?;
    if from == 0 && !tail.starts_with(b"[") {
        return Err(invalid(
            "not a trace-event file written by slicetrace (no '[' at the start)",
        ));
    }
    if tail.trim_ascii_end().ends_with(b"]") {
        return Ok(Repaired::AlreadyValid);
    }
    let line_start = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = &tail[line_start..];
    let keep = if is_whole_object(last) {
        tail.len()
    } else {
        // Cut the partial line, its newline, and the comma that was written for it.
        let mut k = line_start.saturating_sub(1);
        if k > 0 && tail[k - 1] == b',' {
            k -= 1;
        }
        if from > 0 && k == 0 {
            return Err(invalid(
                "the last line is longer than the repair looks back",
            ));
        }
        k
    };
    let new_len = from + keep as u64;
    f.set_len(new_len)?;
    f.seek(SeekFrom::End(0))?;
    f.write_all(b"\n]\n")?;
    f.sync_all()?;
    Ok(Repaired::Closed {
        dropped_bytes: len - new_len,
    })
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Whether `line` is one whole JSON object: braces balanced outside strings, closing at the
/// last byte.
fn is_whole_object(line: &[u8]) -> bool {
    if line.first() != Some(&b'{') {
        return false;
    }
    let (mut depth, mut in_str, mut escaped) = (0i64, false, false);
    for (i, &b) in line.iter().enumerate() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return i == line.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(content: &str) -> (Repaired, String) {
        let p = std::env::temp_dir().join(format!(
            "slicetrace-repair-{}-{}.json",
            std::process::id(),
            content.len()
        ));
        std::fs::write(&p, content).unwrap();
        let r = repair(&p).unwrap();
        let out = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        (r, out)
    }

    #[test]
    fn cuts_a_partial_last_event_and_closes_the_array() {
        let (r, out) = fixed("[\n{\"a\":1},\n{\"b\":\"}\\\"{\",\"c\":{");
        assert_eq!(out, "[\n{\"a\":1}\n]\n");
        assert!(matches!(r, Repaired::Closed { dropped_bytes } if dropped_bytes > 10));
        assert_eq!(
            fixed("[\n{\"a\":1},\n{\"b\":{}}").1,
            "[\n{\"a\":1},\n{\"b\":{}}\n]\n"
        );
        assert_eq!(fixed("[\n").1, "[\n]\n");
        assert_eq!(fixed("[\n{\"a\":1},\n").1, "[\n{\"a\":1}\n]\n");
        assert_eq!(fixed("[\n{\"a\":1}\n]\n").0, Repaired::AlreadyValid);
    }

    #[test]
    fn refuses_what_is_not_a_trace_file() {
        let p = std::env::temp_dir().join(format!("slicetrace-repair-bad-{}", std::process::id()));
        std::fs::write(&p, "hello").unwrap();
        assert_eq!(repair(&p).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "hello");
        std::fs::remove_file(&p).unwrap();
    }
}
