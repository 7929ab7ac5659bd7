//! The drainer's record decoder on arbitrary ring contents: never panics, accounts for every
//! record (decoded, or reported bad), never allocates more than the input's size, and gives the
//! same result when the records arrive in pieces (the drainer decodes a ring a piece at a time,
//! carrying a record whose chunks are not all there yet into the next piece).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slicetrace::__private::{decode, DecodeError, Decoded, Record};
use std::cell::RefCell;

#[derive(Debug, PartialEq)]
enum Seen {
    Record(Decoded),
    Bad(u64, DecodeError),
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let n = data.len() / 32;
    let recs: Vec<Record> = (0..n)
        .map(|i| bytemuck::pod_read_unaligned(&data[i * 32..i * 32 + 32]))
        .collect();
    // Records and errors in the order they were reported, from both callbacks.
    let whole = RefCell::new(Vec::new());
    let mut payload_bytes = 0usize;
    let mut bad = 0usize;
    let used = decode(
        &recs,
        0,
        false,
        |d| {
            payload_bytes += d.payload.len();
            whole.borrow_mut().push(Seen::Record(d.clone()));
        },
        |p, e| {
            bad += 1;
            whole.borrow_mut().push(Seen::Bad(p, e));
        },
    );
    assert_eq!(used, n);
    assert!(payload_bytes <= data.len());
    assert!(bad <= n);

    let piece = usize::from(piece).max(1);
    let pieces = RefCell::new(Vec::new());
    let mut carry: Vec<Record> = Vec::new();
    let mut pos = 0u64;
    for (k, chunk) in recs.chunks(piece).enumerate() {
        carry.extend_from_slice(chunk);
        let more = (k + 1) * piece < n;
        let used = decode(
            &carry,
            pos,
            more,
            |d| pieces.borrow_mut().push(Seen::Record(d.clone())),
            |p, e| pieces.borrow_mut().push(Seen::Bad(p, e)),
        );
        carry.drain(..used);
        pos += used as u64;
    }
    assert!(carry.is_empty());
    assert_eq!(pieces.into_inner(), whole.into_inner());
});
