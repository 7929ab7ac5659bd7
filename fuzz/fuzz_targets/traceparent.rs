//! The W3C `traceparent` parser on arbitrary text: never panics, and a version-00 value it
//! accepts prints back the same (modulo surrounding blanks, which W3C allows).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slicetrace::PropagateContext;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ctx) = PropagateContext::from_traceparent(text) {
        let trimmed = text.trim_matches([' ', '\t']);
        if trimmed.starts_with("00-") {
            let flags_sampled = u8::from_str_radix(&trimmed[53..55], 16).unwrap() & 1;
            let printed = ctx.to_traceparent();
            assert_eq!(&printed[..53], &trimmed[..53]);
            assert_eq!(&printed[53..], if flags_sampled == 1 { "01" } else { "00" });
        }
        assert_eq!(
            PropagateContext::from_traceparent(&ctx.to_traceparent()),
            Ok(ctx)
        );
    }
});
