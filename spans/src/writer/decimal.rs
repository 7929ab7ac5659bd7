//! Decimal numbers for the trace-event lines, each of which holds four or five: pids, tids,
//! flow ids and times in microseconds. Each is made right-aligned in a scratch line, four
//! digits per division, and copied over in a piece of fixed length: no pass through the
//! formatter's buffer, no copy of unknown length, no fraction written a character at a time.

/// "00", "01", … "99": two digits per division.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The longest number made here: 20 digits of a `u64`, or 17 of a `u64` / 1000 and four of
/// a fraction.
const WIDTH: usize = 24;

/// A number is made to end at `WIDTH` in a line twice as long, so that the `WIDTH` bytes from
/// its first digit are always inside the line.
type Scratch = [u8; 2 * WIDTH];

/// Appends `v` in decimal.
pub(crate) fn push_u64(out: &mut String, v: u64) {
    let mut line: Scratch = [b'0'; 2 * WIDTH];
    let start = digits_before(&mut line, WIDTH, v);
    push_from(out, &line, start);
}

/// Appends nanoseconds `ns` as microseconds with three decimals, as the format's `ts` and
/// `dur` want: every nanosecond digit kept.
pub(crate) fn push_us(out: &mut String, ns: u64) {
    let mut line: Scratch = [b'0'; 2 * WIDTH];
    let frac = (ns % 1000) as usize;
    line[WIDTH - 4] = b'.';
    line[WIDTH - 3] = b'0' + (frac / 100) as u8;
    let pair = frac % 100 * 2;
    line[WIDTH - 2..WIDTH].copy_from_slice(&PAIRS[pair..pair + 2]);
    let start = digits_before(&mut line, WIDTH - 4, ns / 1000);
    push_from(out, &line, start);
}

/// Writes the digits of `v` to end just before `end`; returns where they start.
#[inline(always)]
fn digits_before(line: &mut Scratch, mut end: usize, mut v: u64) -> usize {
    // Four digits per division while there are more: half the dependent divisions.
    while v >= 10_000 {
        let four = (v % 10_000) as usize;
        v /= 10_000;
        let (high, low) = (four / 100 * 2, four % 100 * 2);
        line[end - 4..end - 2].copy_from_slice(&PAIRS[high..high + 2]);
        line[end - 2..end].copy_from_slice(&PAIRS[low..low + 2]);
        end -= 4;
    }
    if v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        line[end - 2..end].copy_from_slice(&PAIRS[pair..pair + 2]);
        end -= 2;
    }
    if v >= 10 {
        let pair = v as usize * 2;
        line[end - 2..end].copy_from_slice(&PAIRS[pair..pair + 2]);
        end - 2
    } else {
        line[end - 1] = b'0' + v as u8;
        end - 1
    }
}

/// Appends `line[start..WIDTH]`: `WIDTH` bytes are copied (a copy of known length is a few
/// moves), and the string's length then set to take only the number.
#[inline(always)]
fn push_from(out: &mut String, line: &Scratch, start: usize) {
    let piece = &line[start..start + WIDTH];
    let len = WIDTH - start;
    debug_assert!(piece.iter().all(|b| b.is_ascii_digit() || *b == b'.'));
    out.reserve(WIDTH);
    // SAFETY: the scratch line holds only ASCII digits and '.' (it starts as '0's, and only
    // those are written to it), and ASCII is UTF-8, so the string stays UTF-8. `WIDTH` bytes
    // of room past the string's end were reserved just above and `piece` is `WIDTH` long;
    // of the bytes copied, only the first `len` (at most `WIDTH`) become part of the string.
    unsafe {
        let bytes = out.as_mut_vec();
        let at = bytes.len();
        std::ptr::copy_nonoverlapping(piece.as_ptr(), bytes.as_mut_ptr().add(at), WIDTH);
        bytes.set_len(at + len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::xorshift;

    #[test]
    fn numbers_read_as_the_standard_formatter_writes_them() {
        let mut cases = vec![0, 1, 9, 10, 99, 100, 999, 1000, 1001, u64::MAX];
        cases.extend((0..20).map(|k| 10u64.pow(k)));
        cases.extend((1..20).map(|k| 10u64.pow(k) - 1));
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        // Under Miri, which checks the copies stay inside the scratch line, fewer.
        let rounds = if cfg!(miri) { 300 } else { 50_000 };
        for _ in 0..rounds {
            let v = next();
            // Every length, not mostly twenty digits.
            cases.push(v >> (v % 64));
        }
        for &v in &cases {
            // After text already there, which must stay as it was.
            let mut out = String::from("x");
            push_u64(&mut out, v);
            out.push(' ');
            push_us(&mut out, v);
            let want = format!("x{v} {}.{:03}", v / 1000, v % 1000);
            assert_eq!(out, want);
        }
    }
}
