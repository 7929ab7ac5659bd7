//! Lines of an input, each lent as a slice of one buffer.
//!
//! The file is read a chunk at a time, a small part of the L2 cache, and the lines that chunk
//! completes are parsed while it is still there; a line is not copied again into a buffer of
//! its own, so each byte is copied once, by the kernel.

use std::io::{self, Read};

/// Bytes asked of the input per read.
const CHUNK: usize = 128 << 10;

pub(super) struct Lines<R> {
    r: R,
    buf: Vec<u8>,
    /// Where the next line starts.
    start: usize,
    /// How far the search for its end has gone.
    scanned: usize,
    /// The end of what has been read.
    end: usize,
    eof: bool,
}

impl<R: Read> Lines<R> {
    pub fn new(r: R) -> Lines<R> {
        Lines {
            r,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            end: 0,
            eof: false,
        }
    }

    /// The next line, without its `\n`; the last one need not end with one. The buffer holds
    /// the longest line so far and a chunk more.
    pub fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
                let line = self.start..self.scanned + i;
                self.start = line.end + 1;
                self.scanned = self.start;
                return Ok(Some(&self.buf[line]));
            }
            self.scanned = self.end;
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line = self.start..self.end;
                self.start = self.end;
                return Ok(Some(&self.buf[line]));
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.buf.len() - self.end < CHUNK {
            // The unfinished line moves to the front; the buffer grows only when that line
            // leaves no chunk's room.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < CHUNK {
                // One chunk for an input that fits in one; past that, room for several, so
                // that an unfinished line moves to the front once every few reads, not each.
                let least = if self.buf.is_empty() {
                    CHUNK
                } else {
                    8 * CHUNK
                };
                self.buf.resize((self.end + CHUNK).max(least), 0);
            }
        }
        loop {
            match self.r.read(&mut self.buf[self.end..self.end + CHUNK]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Lines shorter and longer than a chunk, empty ones, and a last one with or without its
    /// newline come out as splitting the whole input gives them, however reads cut it.
    #[test]
    fn lines_come_out_as_a_split_of_the_whole_input() {
        let long = "x".repeat(3 * CHUNK + 17);
        let mid = "y".repeat(CHUNK - 1);
        for tail in ["", "\n", "last", "last\n"] {
            let text = format!("a\n\n{long}\nb\n{mid}\n{mid}z\n{long}{tail}");
            let mut want: Vec<&str> = text.split('\n').collect();
            if text.ends_with('\n') {
                want.pop();
            }
            for step in [1 << 20, CHUNK, 4096, 1000, 7] {
                let mut lines = Lines::new(Dribble {
                    data: text.as_bytes(),
                    step,
                });
                let mut got = Vec::new();
                while let Some(l) = lines.next_line().unwrap() {
                    got.push(String::from_utf8(l.to_vec()).unwrap());
                }
                assert_eq!(got, want, "tail {tail:?}, step {step}");
                assert!(lines.buf.len() <= (8 * CHUNK).max(long.len() + 2 * CHUNK));
            }
        }
        let mut empty = Lines::new(&b""[..]);
        assert_eq!(empty.next_line().unwrap(), None);
    }
}
