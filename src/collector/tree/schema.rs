//! The names the tree gives its spans and the attribute keys it writes, in one place, so that a
//! reader of the exported trees (and the trace-event writer) has one list to agree with.

use crate::ids::Rid;
use crate::wire::record::truncate_str;

/// The request's id as the caller gave it (its text, else the number), on every span.
pub const RID: &str = "rid";
/// The OpenTelemetry convention's thread id, on thread spans and every slice.
pub const THREAD_ID: &str = "thread.id";
pub const THREAD_NAME: &str = "thread.name";
/// What `set_thread_info` called the thread, else its name.
pub const THREAD_LABEL: &str = "thread_label";
pub const HOST_ID: &str = "host_id";
/// The OS thread id again, under the key the inference servers' own traces use.
pub const PID: &str = "pid";
pub const TP_RANK: &str = "tp_rank";
pub const DP_RANK: &str = "dp_rank";
/// On the request span of a `req_start` given a bootstrap room.
pub const BOOTSTRAP_ROOM: &str = "bootstrap_room";
/// On spans closed by the tree rather than by their end record.
pub const UNFINISHED: &str = "slicetrace.unfinished";

/// The name of a slice that was anonymous at its start and got no name at its end.
pub const ANONYMOUS_SLICE: &str = "anonymous";
/// The name of an event whose name did not decode.
pub const UNNAMED_EVENT: &str = "event";

/// `"{label} [TP n] (host:… | pid:…)"`: the host id cut to 8 bytes, the rank only when set.
pub fn thread_span_name(label: &str, tp_rank: Option<u32>, host_id: &str, tid: u64) -> String {
    let host8 = truncate_str(host_id, 8);
    match tp_rank {
        Some(tp) => format!("{label} [TP {tp}] (host:{host8} | pid:{tid})"),
        None => format!("{label} (host:{host8} | pid:{tid})"),
    }
}

/// `"Req …"`: the text's last `_`-separated part cut to 8 bytes, else the rid's number.
pub fn request_span_name(rid_text: Option<&str>, rid: Rid) -> String {
    match rid_text {
        Some(t) => format!("Req {}", short_rid(t)),
        None => format!("Req {}", rid.0),
    }
}

fn short_rid(text: &str) -> &str {
    let tail = text.rsplit('_').next().unwrap_or(text);
    truncate_str(tail, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_names_follow_their_formats() {
        let cases = [
            (
                ("sched", Some(2), "abcdef0123", 77),
                "sched [TP 2] (host:abcdef01 | pid:77)",
            ),
            (("tok", None, "h", 5), "tok (host:h | pid:5)"),
        ];
        for ((label, tp, host, tid), want) in cases {
            assert_eq!(thread_span_name(label, tp, host, tid), want);
        }
        let cases = [
            (Some("chatcmpl_0123456789ab"), 9, "Req 01234567"),
            (Some("plain"), 9, "Req plain"),
            (Some("ends_with_"), 9, "Req "),
            (None, 42, "Req 42"),
        ];
        for (text, rid, want) in cases {
            assert_eq!(request_span_name(text, Rid(rid)), want);
        }
    }
}
