//! What the Request → Thread → Slice tree writes into its spans — attribute keys, span-name and
//! track-name formats — and the one rule that tells a span's [`Role`] from its attributes,
//! applied where a span enters the model.
//!
//! The drainer's tree writes these spans; the trace-event writer and the command read them.

use crate::model::{AttrValue, Role, Span};
use crate::util::truncate_str;
use std::fmt::Write as _;

/// Deepest nesting of slices kept per request and thread; deeper slices are counted and dropped.
pub const MAX_DEPTH: usize = 64;

/// Defines each key, and under [`member`] the same key as a JSON object member that follows
/// another (`,"key":`), and under [`text_member`] one whose value, a string, opens
/// (`,"key":"`): the writer copies these into its lines whole.
macro_rules! keys {
    ($($(#[$doc:meta])* $name:ident = $key:literal;)*) => {
        $($(#[$doc])* pub const $name: &str = $key;)*

        /// Each key as a JSON object member after another: `,"key":`.
        pub mod member {
            $(pub const $name: &str = concat!(",\"", $key, "\":");)*
        }

        /// Each key as a JSON object member after another, its string value opened: `,"key":"`.
        pub mod text_member {
            $(pub const $name: &str = concat!(",\"", $key, "\":\"");)*
        }
    };
}

keys! {
    /// The request id, as the caller gave it (text), on request spans and on every slice.
    RID = "rid";
    /// The label the thread was given (`set_thread_info`), on thread spans only.
    THREAD_LABEL = "thread_label";
    /// Tensor-parallel rank of the thread, on thread spans.
    TP_RANK = "tp_rank";
    /// Data-parallel rank of the thread, on thread spans.
    DP_RANK = "dp_rank";
    /// Pipeline-parallel rank of the thread, on thread spans.
    PP_RANK = "pp_rank";
    /// The OS thread id (the OpenTelemetry convention), on thread spans and on every slice.
    THREAD_ID = "thread.id";
    /// The OS thread name (the OpenTelemetry convention), on thread spans.
    THREAD_NAME = "thread.name";
    /// The OS thread id under the name the reference tracer gives it, on thread spans.
    PID = "pid";
    /// The host the thread ran on, on thread spans.
    HOST_ID = "host_id";
    /// The disaggregation bootstrap room of a request, in hex (`0x1f`), on its bootstrap room
    /// span.
    BOOTSTRAP_ROOM = "bootstrap_room";
    /// `true` on a span that was still open when it had to be closed.
    UNFINISHED = "slicetrace.unfinished";
    /// `true` on an async slice whose future was dropped before it completed.
    CANCELLED = "slicetrace.cancelled";
    /// On an async slice that ended on another thread than it started on: that thread's id.
    END_THREAD_ID = "slicetrace.end_thread.id";
    /// How many requests a batch item's link stands for.
    BATCH = "batch";

    /// In a trace-event file's `args`: the span's trace id (32 hex digits).
    ARG_TRACE_ID = "trace_id";
    /// In a trace-event file's `args`: the span's id (16 hex digits).
    ARG_SPAN_ID = "span_id";
    /// In a trace-event file's `args`: the parent's span id, absent for a root.
    ARG_PARENT_SPAN_ID = "parent_span_id";
    /// In a trace-event file's `args`: each link as `trace-span` in hex.
    ARG_LINKS = "links";
    /// In a trace-event file's `args`: the error status message.
    ARG_ERROR = "error";
    /// In a trace-event file, the `process_name` argument holding the Unix time (ns) that `ts`
    /// values count from.
    EPOCH_ARG = "slicetrace_epoch_unix_ns";
}

/// The name of a slice that was never given one.
pub const ANONYMOUS: &str = "anonymous";
/// The name of an event that was given none.
pub const EVENT: &str = "event";

impl Span {
    /// The OS thread id a thread span or slice names (`thread.id`, or the reference's `pid`).
    pub fn thread_id(&self) -> Option<u64> {
        self.attr(THREAD_ID)
            .or_else(|| self.attr(PID))
            .and_then(AttrValue::as_i64)
            .map(|t| t as u64)
    }
}

/// The role of a span from its attributes: a thread span names its thread's label; a request
/// span names its rid, and a bootstrap room span its room, but neither a thread; everything
/// else is a slice.
pub fn role_of(attrs: &[(String, AttrValue)]) -> Role {
    let has = |key: &str| attrs.iter().any(|(k, _)| k == key);
    if has(THREAD_LABEL) {
        Role::Thread
    } else if (has(RID) || has(BOOTSTRAP_ROOM)) && !has(THREAD_ID) {
        Role::Request
    } else {
        Role::Slice
    }
}

/// The shortened rid a request span's name shows: after its last `_` (a worker prefix), at
/// most 8 characters.
pub fn short_rid(text: &str) -> &str {
    let tail = text.rsplit('_').next().unwrap_or(text);
    match tail.char_indices().nth(8) {
        Some((i, _)) => &tail[..i],
        None => tail,
    }
}

/// A request span's name: `{role} Req {short rid}`, the role empty when none was given (the
/// name then starts with a space, as the reference writes it).
pub fn request_span_name(role: Option<&str>, rid_text: &str) -> String {
    format!("{} Req {}", role.unwrap_or(""), short_rid(rid_text))
}

/// A bootstrap room span's name: `Bootstrap Room 0x{room in hex}`.
pub fn room_span_name(room: u64) -> String {
    format!("Bootstrap Room {room:#x}")
}

/// The `bootstrap_room` attribute's value: the room in hex, `0x0` for none.
pub fn room_text(room: u64) -> String {
    format!("{room:#x}")
}

/// The ranks a thread span's name shows. SGLang 0.5.9 writes the TP rank only; 0.5.11 and later
/// write TP, then PP, then DP, each spaced on both sides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameRanks {
    pub tp: Option<u32>,
    pub pp: Option<u32>,
    pub dp: Option<u32>,
}

/// A thread span's name: `label(host:<first 8 bytes> | pid:<tid>)`, or with ranks
/// `label [TP n]  [PP n]  [DP n] (host:… | pid:…)`, spaced as the reference writes them.
pub fn thread_span_name(label: &str, ranks: NameRanks, host_id: &str, tid: u64) -> String {
    let host8 = truncate_str(host_id, 8);
    let mut name = label.to_owned();
    for (tag, rank) in [("TP", ranks.tp), ("PP", ranks.pp), ("DP", ranks.dp)] {
        if let Some(r) = rank {
            let _ = write!(name, " [{tag} {r}] ");
        }
    }
    let _ = write!(name, "(host:{host8} | pid:{tid})");
    name
}

/// A thread's title on a track or a row: `label [TP n] [DP n]`, each rank when known.
pub fn thread_title(label: &str, tp_rank: Option<i64>, dp_rank: Option<i64>) -> String {
    let mut name = label.to_owned();
    if let Some(tp) = tp_rank {
        let _ = write!(name, "{TP_TAG}{tp}]");
    }
    if let Some(dp) = dp_rank {
        let _ = write!(name, "{DP_TAG}{dp}]");
    }
    name
}

const TP_TAG: &str = " [TP ";
const DP_TAG: &str = " [DP ";

/// The label and ranks of a track named by [`thread_title`], for a trace-event file whose
/// tracks do not carry them as fields (an older version's): a label holding `" ["` is cut there.
pub fn parse_thread_title(title: &str) -> (String, Option<i64>, Option<i64>) {
    let rank = |tag: &str| {
        let i = title.find(tag)?;
        title[i + tag.len()..]
            .split(']')
            .next()?
            .trim()
            .parse()
            .ok()
    };
    let label = title.split(" [").next().unwrap_or(title).to_owned();
    (label, rank(TP_TAG), rank(DP_TAG))
}

/// The title of a thread's track when its span gave no label.
pub fn unlabelled_thread_title(tid: u64) -> String {
    format!("thread {tid}")
}

/// The title of the track of slices whose thread could not be found.
pub const UNPLACED_TRACK: &str = "unplaced slices (thread unknown)";

/// Between a thread's title and its lane number, in an overlap lane's title.
const OVERLAP: &str = " · overlap ";

/// The title of overlap lane `n` (from 1) of the thread titled `title`.
pub fn overlap_lane_title(title: &str, n: u64) -> String {
    format!("{title}{OVERLAP}{n}")
}

/// Whether a track title is one the writer makes for no thread span of its own: an overlap lane
/// or the unplaced track.
pub fn is_derived_track_title(title: &str) -> bool {
    title.contains(OVERLAP) || title.starts_with("unplaced")
}

/// The process track's title: `service (pid n on host)`, `process` for no service, the
/// parenthesis only when the pid is known.
pub fn process_title(service: &str, pid: u64, host: &str) -> String {
    let mut name = if service.is_empty() {
        "process".to_owned()
    } else {
        service.to_owned()
    };
    if pid != 0 {
        let _ = write!(name, "{PROCESS_PID}{pid}");
        if !host.is_empty() {
            let _ = write!(name, " on {host}");
        }
        name.push(')');
    }
    name
}

const PROCESS_PID: &str = " (pid ";

/// Service, pid and host of a process track named by [`process_title`] (the title as the
/// service when it does not parse).
pub fn parse_process_title(title: &str) -> (String, u64, String) {
    if let Some(i) = title.rfind(PROCESS_PID) {
        let inner = title[i + PROCESS_PID.len()..].trim_end_matches(')');
        let (pid, host) = inner.split_once(" on ").unwrap_or((inner, ""));
        if let Ok(pid) = pid.parse() {
            return (title[..i].to_owned(), pid, host.to_owned());
        }
    }
    (title.to_owned(), 0, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(keys: &[&str]) -> Vec<(String, AttrValue)> {
        keys.iter()
            .map(|k| (k.to_string(), AttrValue::Int(1)))
            .collect()
    }

    #[test]
    fn the_role_follows_the_tree_attributes() {
        for (keys, role) in [
            (&[THREAD_LABEL, THREAD_ID, PID][..], Role::Thread),
            (&[RID, THREAD_LABEL][..], Role::Thread),
            (&[RID][..], Role::Request),
            (&[BOOTSTRAP_ROOM][..], Role::Request),
            (&[RID, THREAD_ID][..], Role::Slice),
            (&[THREAD_ID][..], Role::Slice),
            (&[][..], Role::Slice),
        ] {
            assert_eq!(role_of(&attrs(keys)), role, "{keys:?}");
        }
    }

    #[test]
    fn members_are_their_keys_as_json() {
        for (key, member) in [
            (RID, member::RID),
            (THREAD_ID, member::THREAD_ID),
            (ARG_TRACE_ID, member::ARG_TRACE_ID),
            (UNFINISHED, member::UNFINISHED),
        ] {
            let mut json = String::from(",");
            crate::util::json_str(&mut json, key);
            json.push(':');
            assert_eq!(member, json);
        }
        assert_eq!(text_member::ARG_SPAN_ID, ",\"span_id\":\"");
    }

    fn tp(tp: Option<u32>) -> NameRanks {
        NameRanks {
            tp,
            ..NameRanks::default()
        }
    }

    #[test]
    fn names_are_formatted_as_the_tree_gives_them() {
        assert_eq!(request_span_name(None, "chat_3f2a9c0e77"), " Req 3f2a9c0e");
        assert_eq!(
            request_span_name(Some("decode"), "é_éééééééééé"),
            "decode Req éééééééé"
        );
        assert_eq!(request_span_name(None, "42"), " Req 42");
        assert_eq!(room_span_name(0), "Bootstrap Room 0x0");
        assert_eq!(room_span_name(0xbeef), "Bootstrap Room 0xbeef");
        assert_eq!(room_text(31), "0x1f");
        assert_eq!(
            thread_span_name("scheduler", tp(Some(1)), "host-0123456", 77),
            "scheduler [TP 1] (host:host-012 | pid:77)"
        );
        assert_eq!(
            thread_span_name("tokenizer", tp(None), "h", 5),
            "tokenizer(host:h | pid:5)"
        );
        let all = NameRanks {
            tp: Some(0),
            pp: Some(1),
            dp: Some(2),
        };
        assert_eq!(
            thread_span_name("Scheduler", all, "h", 5),
            "Scheduler [TP 0]  [PP 1]  [DP 2] (host:h | pid:5)"
        );
        let dp_only = NameRanks {
            dp: Some(3),
            ..NameRanks::default()
        };
        assert_eq!(
            thread_span_name("w", dp_only, "h", 5),
            "w [DP 3] (host:h | pid:5)"
        );
        assert_eq!(
            overlap_lane_title("scheduler [TP 1]", 2),
            "scheduler [TP 1] · overlap 2"
        );
        assert_eq!(process_title("", 0, "h"), "process");
        assert_eq!(process_title("svc", 12, ""), "svc (pid 12)");
    }

    /// A track's title reads back as the label and ranks it was made from, and a process
    /// title as its service, pid and host.
    #[test]
    fn titles_read_back_as_what_made_them() {
        for (label, tp, dp) in [
            ("scheduler", Some(1), Some(0)),
            ("scheduler", None, Some(3)),
            ("tokenizer", None, None),
            ("detokenizer", Some(7), None),
        ] {
            let title = thread_title(label, tp, dp);
            assert_eq!(parse_thread_title(&title), (label.to_owned(), tp, dp));
            assert!(!is_derived_track_title(&title));
            assert!(is_derived_track_title(&overlap_lane_title(&title, 1)));
        }
        assert!(is_derived_track_title(UNPLACED_TRACK));
        for (service, pid, host) in [("svc", 12, "h1"), ("svc (x)", 9, ""), ("a b", 1, "c d")] {
            let title = process_title(service, pid, host);
            assert_eq!(
                parse_process_title(&title),
                (service.to_owned(), pid, host.to_owned())
            );
        }
        assert_eq!(
            parse_process_title("svc"),
            ("svc".to_owned(), 0, String::new())
        );
    }
}
