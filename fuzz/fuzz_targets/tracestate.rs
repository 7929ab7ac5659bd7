//! A W3C `tracestate` on its way through slicetrace (written into a start record by the calling
//! thread, read back and parsed by the drainer), on arbitrary text: never panics; what is kept
//! is exactly what the OpenTelemetry parser accepts (up to 512 bytes), and it prints back as
//! that parser prints it; the rest is refused (and counted by the drainer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry::trace::TraceState;
use slicetrace::__private::tracestate_through_records;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let got = tracestate_through_records(text);
    let want = if text.is_empty() || text.len() > 512 {
        None
    } else {
        text.parse::<TraceState>().ok().map(|s| s.header())
    };
    assert_eq!(got, want, "{text:?}");
    // What is kept survives a second trip unchanged (an empty one is no tracestate at all).
    if let Some(kept) = got.filter(|k| !k.is_empty()) {
        assert_eq!(tracestate_through_records(&kept), Some(kept.clone()));
    }
});
