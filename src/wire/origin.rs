//! The payload of an origin record (`ReqStart`, `SetPropagate`): where a request begins on a
//! thread, and what that thread knows of it from elsewhere.
//!
//! In order: the upstream context (`SetPropagate` always, `ReqStart` with `flag::UPSTREAM`),
//! then a W3C tracestate (with `flag::TRACESTATE`: its length, then the text), then the
//! request's role (`ReqStart` with `flag::ROLE`: its length, then the text), then the rid's
//! text, which runs to the end of the payload.

use super::record::{flag, truncate_str, Kind, Record, MAX_STR_BYTES};
use crate::ids::{derive_span_id, derive_trace_id, Salt};
use std::mem::size_of;

/// Longest W3C tracestate kept (the length W3C asks every vendor to propagate).
pub const MAX_TRACESTATE_BYTES: usize = 512;

const TRACE_ID_BYTES: usize = size_of::<u128>();
const SPAN_ID_BYTES: usize = size_of::<u64>();
const LINK_AT: usize = TRACE_ID_BYTES;
const EXTRA_AT: usize = LINK_AT + SPAN_ID_BYTES;

/// Bytes of the upstream context: a trace id and two span-sized ids.
pub const UPSTREAM_BYTES: usize = EXTRA_AT + SPAN_ID_BYTES;

/// Bytes of the tracestate's length.
const TRACESTATE_LEN_BYTES: usize = size_of::<u16>();

/// Longest role kept (`req_start`'s role names a server's part: `prefill`, `decode`, …).
pub const MAX_ROLE_BYTES: usize = 64;

/// Bytes of the role's length.
const ROLE_LEN_BYTES: usize = size_of::<u8>();

const _: () = assert!(MAX_ROLE_BYTES <= u8::MAX as usize);

const _: () = assert!(MAX_TRACESTATE_BYTES <= u16::MAX as usize);

/// The longest origin payload: an upstream context, the longest tracestate kept and the
/// longest rid text.
pub const MAX_ORIGIN_PAYLOAD: usize = UPSTREAM_BYTES
    + TRACESTATE_LEN_BYTES
    + MAX_TRACESTATE_BYTES
    + ROLE_LEN_BYTES
    + MAX_ROLE_BYTES
    + MAX_STR_BYTES;

// A record's `len` counts its payload bytes in a u16.
const _: () = assert!(MAX_ORIGIN_PAYLOAD <= u16::MAX as usize);

/// The fixed context an origin record carries from upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Upstream {
    pub trace_id: u128,
    /// `SetPropagate`: the link span; `ReqStart`: the remote link span.
    pub link: u64,
    /// `SetPropagate`: the sender's process tag; `ReqStart`: the remote parent span.
    pub extra: u64,
}

impl Upstream {
    pub fn encode(&self) -> [u8; UPSTREAM_BYTES] {
        let mut b = [0u8; UPSTREAM_BYTES];
        b[..LINK_AT].copy_from_slice(&self.trace_id.to_le_bytes());
        b[LINK_AT..EXTRA_AT].copy_from_slice(&self.link.to_le_bytes());
        b[EXTRA_AT..].copy_from_slice(&self.extra.to_le_bytes());
        b
    }

    /// The context at the start of `b`; `None` when `b` is shorter than one.
    pub fn decode(b: &[u8]) -> Option<Upstream> {
        let b: &[u8; UPSTREAM_BYTES] = b.get(..UPSTREAM_BYTES)?.try_into().ok()?;
        let u64_at = |at: usize| {
            let mut w = [0u8; SPAN_ID_BYTES];
            w.copy_from_slice(&b[at..at + SPAN_ID_BYTES]);
            u64::from_le_bytes(w)
        };
        let mut t = [0u8; TRACE_ID_BYTES];
        t.copy_from_slice(&b[..LINK_AT]);
        Some(Upstream {
            trace_id: u128::from_le_bytes(t),
            link: u64_at(LINK_AT),
            extra: u64_at(EXTRA_AT),
        })
    }
}

/// Whether an origin record of this head begins its payload with an upstream context.
#[inline]
pub(crate) fn has_upstream(head: &Record) -> bool {
    head.kind == Kind::SetPropagate as u8 || head.flags & flag::UPSTREAM != 0
}

/// Writes the payload of the origin record `head` (a `ReqStart` or `SetPropagate`) into `out`
/// and sets the head's flags for it; returns the payload's length. `upstream` is required for a
/// `SetPropagate`. A tracestate over [`MAX_TRACESTATE_BYTES`] is written empty, so the drainer
/// counts it refused; a role is cut to [`MAX_ROLE_BYTES`] (and kept by a `ReqStart` only),
/// `text` to [`MAX_STR_BYTES`].
pub(crate) fn encode_origin(
    head: &mut Record,
    upstream: Option<&Upstream>,
    tracestate: Option<&str>,
    role: Option<&str>,
    text: &str,
    out: &mut [u8; MAX_ORIGIN_PAYLOAD],
) -> usize {
    debug_assert!(
        head.kind == Kind::ReqStart as u8
            || (head.kind == Kind::SetPropagate as u8 && upstream.is_some())
    );
    let mut n = 0;
    if let Some(up) = upstream {
        if head.kind == Kind::ReqStart as u8 {
            head.flags |= flag::UPSTREAM;
        }
        out[..UPSTREAM_BYTES].copy_from_slice(&up.encode());
        n = UPSTREAM_BYTES;
    }
    if let Some(state) = tracestate {
        head.flags |= flag::TRACESTATE;
        let state = if state.len() <= MAX_TRACESTATE_BYTES {
            state
        } else {
            ""
        };
        out[n..n + TRACESTATE_LEN_BYTES].copy_from_slice(&(state.len() as u16).to_le_bytes());
        n += TRACESTATE_LEN_BYTES;
        out[n..n + state.len()].copy_from_slice(state.as_bytes());
        n += state.len();
    }
    if let Some(role) = role.filter(|_| head.kind == Kind::ReqStart as u8) {
        head.flags |= flag::ROLE;
        let role = truncate_str(role, MAX_ROLE_BYTES);
        out[n] = role.len() as u8;
        n += ROLE_LEN_BYTES;
        out[n..n + role.len()].copy_from_slice(role.as_bytes());
        n += role.len();
    }
    let text = truncate_str(text, MAX_STR_BYTES);
    out[n..n + text.len()].copy_from_slice(text.as_bytes());
    n + text.len()
}

/// An origin record's payload, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OriginPayload<'a> {
    /// The upstream context, when the head says the payload begins with one.
    pub upstream: Option<Upstream>,
    /// The tracestate's bytes, when the head says there is one: empty when the sender's was too
    /// long to keep, or the payload ends before it does.
    pub tracestate: Option<&'a [u8]>,
    /// The role's bytes, when the head says there is one (empty when the payload ends first).
    pub role: Option<&'a [u8]>,
    /// The rid's text (empty when the request was made from an integer).
    pub text: &'a [u8],
}

/// Why an origin payload could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OriginError {
    /// The head is not a `ReqStart` or `SetPropagate`.
    NotOrigin,
    /// The head says an upstream context begins the payload, and the payload is shorter.
    CutUpstream,
}

/// Reads the payload of the origin record `head`. Total: a payload cut anywhere after the
/// upstream context reads as far as it goes (a cut tracestate is empty, and leaves no text).
pub(crate) fn decode_origin<'a>(
    head: &Record,
    payload: &'a [u8],
) -> Result<OriginPayload<'a>, OriginError> {
    if head.kind != Kind::ReqStart as u8 && head.kind != Kind::SetPropagate as u8 {
        return Err(OriginError::NotOrigin);
    }
    let (upstream, mut rest) = if has_upstream(head) {
        let up = Upstream::decode(payload).ok_or(OriginError::CutUpstream)?;
        (Some(up), &payload[UPSTREAM_BYTES..])
    } else {
        (None, payload)
    };
    let mut tracestate = None;
    if head.flags & flag::TRACESTATE != 0 {
        let len = rest
            .get(..TRACESTATE_LEN_BYTES)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let end = TRACESTATE_LEN_BYTES + len;
        tracestate = Some(rest.get(TRACESTATE_LEN_BYTES..end).unwrap_or(&[]));
        rest = rest.get(end..).unwrap_or(&[]);
    }
    let mut role = None;
    if head.kind == Kind::ReqStart as u8 && head.flags & flag::ROLE != 0 {
        let len = rest.first().map_or(0, |&b| b as usize);
        let end = ROLE_LEN_BYTES + len;
        role = Some(rest.get(ROLE_LEN_BYTES..end).unwrap_or(&[]));
        rest = rest.get(end..).unwrap_or(&[]);
    }
    Ok(OriginPayload {
        upstream,
        tracestate,
        role,
        text: rest,
    })
}

/// The request ids a process derives from an origin record.
pub(crate) struct OriginIds {
    pub trace_id: u128,
    pub request_span: u64,
    /// The bootstrap room span above the request span: this process's own, or the other
    /// node's it joined; 0 when this process did not start the request.
    pub room_span: u64,
}

/// The ids of the request the origin record `head` at ring position `pos` starts or joins, for
/// the owner whose span ids come from `seed`.
pub(crate) fn origin_ids(
    seed: u64,
    pos: u64,
    head: &Record,
    upstream: Option<&Upstream>,
) -> Option<OriginIds> {
    match Kind::from_u8(head.kind)? {
        Kind::ReqStart => {
            let up = upstream.filter(|_| head.flags & flag::UPSTREAM != 0);
            Some(OriginIds {
                trace_id: match up {
                    Some(u) => u.trace_id,
                    None => derive_trace_id(seed, pos),
                },
                request_span: derive_span_id(seed, pos, Salt::REQUEST),
                room_span: match up {
                    Some(u) if head.flags & flag::JOINS_ROOM != 0 => u.extra,
                    _ => derive_span_id(seed, pos, Salt::ROOM),
                },
            })
        }
        // Whether handed over inside this process or joined from another, the thread continues
        // the sender's request span: a process that did not start a request opens no request
        // span of its own for it (as the reference's trees).
        Kind::SetPropagate => {
            let u = upstream?;
            Some(OriginIds {
                trace_id: u.trace_id,
                request_span: head.value,
                room_span: 0,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Upstream = Upstream {
        trace_id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        link: 0x1112_1314_1516_1718,
        extra: 0x2122_2324_2526_2728,
    };

    fn origin(kind: Kind) -> Record {
        Record {
            kind: kind as u8,
            ..Record::default()
        }
    }

    fn encoded(
        kind: Kind,
        up: Option<&Upstream>,
        state: Option<&str>,
        role: Option<&str>,
        text: &str,
    ) -> (Record, Vec<u8>) {
        let mut head = origin(kind);
        let mut out = [0u8; MAX_ORIGIN_PAYLOAD];
        let n = encode_origin(&mut head, up, state, role, text, &mut out);
        (head, out[..n].to_vec())
    }

    #[test]
    fn every_part_round_trips_in_either_kind() {
        for (kind, up) in [
            (Kind::ReqStart, None),
            (Kind::ReqStart, Some(&UP)),
            (Kind::SetPropagate, Some(&UP)),
        ] {
            for state in [None, Some(""), Some("a=1,b=2")] {
                for text in ["", "req-42"] {
                    let (head, payload) = encoded(kind, up, state, None, text);
                    let got = decode_origin(&head, &payload).unwrap();
                    assert_eq!(got.upstream.as_ref(), up, "{kind:?} {state:?} {text:?}");
                    assert_eq!(got.tracestate, state.map(str::as_bytes));
                    assert_eq!(got.text, text.as_bytes());
                }
            }
        }
    }

    #[test]
    fn flags_say_what_the_payload_holds() {
        let (head, payload) = encoded(Kind::ReqStart, Some(&UP), Some("k=v"), None, "r");
        assert_eq!(head.flags, flag::UPSTREAM | flag::TRACESTATE);
        assert_eq!(payload.len(), UPSTREAM_BYTES + TRACESTATE_LEN_BYTES + 3 + 1);
        // A `SetPropagate` always carries the context; the flag is the `ReqStart`'s.
        let (head, _) = encoded(Kind::SetPropagate, Some(&UP), None, None, "");
        assert_eq!(head.flags, 0);
        let (head, payload) = encoded(Kind::ReqStart, None, None, None, "abc");
        assert_eq!((head.flags, payload.as_slice()), (0, b"abc".as_slice()));
    }

    #[test]
    fn the_context_is_little_endian_in_field_order() {
        let b = UP.encode();
        assert_eq!(b[0], 0x10);
        assert_eq!(b[LINK_AT], 0x18);
        assert_eq!(b[EXTRA_AT], 0x28);
        assert_eq!(Upstream::decode(&b), Some(UP));
        assert_eq!(Upstream::decode(&b[..UPSTREAM_BYTES - 1]), None);
    }

    #[test]
    fn long_inputs_are_cut_to_what_the_payload_keeps() {
        let long_state = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE_BYTES);
        let long_text = "é".repeat(MAX_STR_BYTES);
        let (head, payload) = encoded(
            Kind::ReqStart,
            Some(&UP),
            Some(&long_state),
            None,
            &long_text,
        );
        let got = decode_origin(&head, &payload).unwrap();
        assert_eq!(got.tracestate, Some(&[][..]), "too long: written empty");
        assert_eq!(got.text, truncate_str(&long_text, MAX_STR_BYTES).as_bytes());
        let at_most = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE_BYTES - 2);
        let (head, payload) = encoded(
            Kind::ReqStart,
            Some(&UP),
            Some(&at_most),
            Some(&"r".repeat(MAX_ROLE_BYTES)),
            &"x".repeat(MAX_STR_BYTES),
        );
        assert_eq!(payload.len(), MAX_ORIGIN_PAYLOAD);
        let got = decode_origin(&head, &payload).unwrap();
        assert_eq!(got.tracestate, Some(at_most.as_bytes()));
    }

    #[test]
    fn a_cut_payload_reads_as_far_as_it_goes() {
        let (head, payload) = encoded(Kind::SetPropagate, Some(&UP), Some("a=1"), None, "rid");
        for cut in 0..payload.len() {
            let got = decode_origin(&head, &payload[..cut]);
            if cut < UPSTREAM_BYTES {
                assert_eq!(got, Err(OriginError::CutUpstream), "cut at {cut}");
                continue;
            }
            let got = got.unwrap();
            assert_eq!(got.upstream, Some(UP));
            let state_end = UPSTREAM_BYTES + TRACESTATE_LEN_BYTES + 3;
            if cut < state_end {
                assert_eq!(
                    (got.tracestate, got.text),
                    (Some(&[][..]), &[][..]),
                    "{cut}"
                );
            } else {
                assert_eq!(got.tracestate, Some(b"a=1".as_slice()));
                assert_eq!(got.text, &b"rid"[..cut - state_end]);
            }
        }
    }

    #[test]
    fn corrupt_lengths_and_other_kinds_have_defined_outcomes() {
        let mut head = origin(Kind::ReqStart);
        head.flags = flag::TRACESTATE;
        // A length past the payload's end: an empty tracestate, no text.
        let got = decode_origin(&head, &[0xff, 0xff, b'a', b'b']).unwrap();
        assert_eq!((got.tracestate, got.text), (Some(&[][..]), &[][..]));
        // A length the payload holds exactly: the rest is the text.
        let got = decode_origin(&head, &[1, 0, b'a', b'b']).unwrap();
        assert_eq!((got.tracestate, got.text), (Some(&b"a"[..]), &b"b"[..]));
        for kind in [Kind::Chunk, Kind::SliceStart, Kind::Propagate, Kind::Batch] {
            assert_eq!(
                decode_origin(&origin(kind), &UP.encode()),
                Err(OriginError::NotOrigin)
            );
        }
        assert_eq!(
            decode_origin(&origin(Kind::SetPropagate), b"short"),
            Err(OriginError::CutUpstream)
        );
    }

    #[test]
    fn ids_follow_the_origin() {
        let (seed, pos) = (7, 40);
        let start = origin(Kind::ReqStart);
        let own = origin_ids(seed, pos, &start, None).unwrap();
        assert_eq!(own.trace_id, derive_trace_id(seed, pos));
        assert_eq!(own.request_span, derive_span_id(seed, pos, Salt::REQUEST));
        assert_eq!(own.room_span, derive_span_id(seed, pos, Salt::ROOM));
        let (under, _) = encoded(Kind::ReqStart, Some(&UP), None, None, "");
        let under = origin_ids(seed, pos, &under, Some(&UP)).unwrap();
        assert_eq!(under.trace_id, UP.trace_id);
        assert_eq!(under.room_span, derive_span_id(seed, pos, Salt::ROOM));
        let (mut room, _) = encoded(Kind::ReqStart, Some(&UP), None, None, "");
        room.flags |= flag::JOINS_ROOM;
        let room = origin_ids(seed, pos, &room, Some(&UP)).unwrap();
        assert_eq!((room.trace_id, room.room_span), (UP.trace_id, UP.extra));
        assert_eq!(room.request_span, derive_span_id(seed, pos, Salt::REQUEST));
        let mut set = origin(Kind::SetPropagate);
        set.rid = 5;
        set.value = 1234;
        assert!(origin_ids(seed, pos, &set, None).is_none());
        let joined = origin_ids(seed, pos, &set, Some(&UP)).unwrap();
        assert_eq!((joined.request_span, joined.room_span), (1234, 0));
        assert!(origin_ids(seed, pos, &origin(Kind::SliceEnd), Some(&UP)).is_none());
    }

    #[test]
    fn a_role_is_kept_by_a_start_only_and_cut_to_its_bound() {
        let (head, payload) = encoded(Kind::ReqStart, Some(&UP), Some("k=v"), Some("decode"), "r");
        assert_eq!(head.flags, flag::UPSTREAM | flag::TRACESTATE | flag::ROLE);
        let got = decode_origin(&head, &payload).unwrap();
        assert_eq!(got.role, Some(&b"decode"[..]));
        assert_eq!((got.tracestate, got.text), (Some(&b"k=v"[..]), &b"r"[..]));
        let (head, payload) = encoded(Kind::SetPropagate, Some(&UP), None, Some("decode"), "r");
        assert_eq!(head.flags & flag::ROLE, 0);
        assert_eq!(decode_origin(&head, &payload).unwrap().role, None);
        let long = "é".repeat(MAX_ROLE_BYTES);
        let (head, payload) = encoded(Kind::ReqStart, None, None, Some(&long), "r");
        let got = decode_origin(&head, &payload).unwrap();
        assert_eq!(
            got.role,
            Some(truncate_str(&long, MAX_ROLE_BYTES).as_bytes())
        );
        assert_eq!(got.text, b"r");
        // A role length past the payload's end: an empty role, no text.
        let mut head = origin(Kind::ReqStart);
        head.flags = flag::ROLE;
        let got = decode_origin(&head, &[9, b'a']).unwrap();
        assert_eq!((got.role, got.text), (Some(&[][..]), &[][..]));
    }
}
