//! The drainer's record decoder on arbitrary ring contents: never panics, accounts for every
//! record (decoded, or reported bad), and never allocates more than the input's size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slicetrace::__private::{decode, Record};

fuzz_target!(|data: &[u8]| {
    let n = data.len() / 32;
    let recs: Vec<Record> = (0..n)
        .map(|i| bytemuck::pod_read_unaligned(&data[i * 32..i * 32 + 32]))
        .collect();
    let mut payload_bytes = 0usize;
    let mut decoded = 0usize;
    let mut bad = 0usize;
    decode(
        &recs,
        0,
        |d| {
            decoded += 1;
            payload_bytes += d.payload.len();
        },
        |_, _| bad += 1,
    );
    assert!(payload_bytes <= data.len());
    assert!(bad <= n);
    let _ = decoded;
});
