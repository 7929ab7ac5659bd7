//! `PropagateContext::from_bytes` on arbitrary bytes: never panics, and whatever it accepts
//! encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slicetrace::PropagateContext;

fuzz_target!(|data: &[u8]| {
    if let Ok(ctx) = PropagateContext::from_bytes(data) {
        assert_eq!(&ctx.to_bytes()[..], data);
    }
});
