//! The context a request carries from one thread or process to the next.

use std::fmt;

/// Bytes in an encoded [`PropagateContext`].
pub const CONTEXT_LEN: usize = 48;

const MAGIC: [u8; 2] = *b"sT";
const VERSION: u8 = 1;
const FLAG_SAMPLED: u8 = 1;
const FLAG_HAS_LINK: u8 = 2;
const FLAG_ROOM: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_HAS_LINK | FLAG_ROOM;

/// Where a request's trace continues: the sender's request span (the receiver's parent) and the
/// sender's current slice (what the receiver's first slice links to). A context for another
/// node names the sender's bootstrap room span instead of its request span
/// ([`names_room`](Self::names_room)): the other node's `req_start` under it opens its request
/// span there, with no room span of its own.
///
/// Fixed-size and `Copy`; [`to_bytes`](Self::to_bytes) gives 48 bytes:
///
/// | bytes | field |
/// |---|---|
/// | 0..2 | magic `sT` |
/// | 2 | version (1) |
/// | 3 | flags: 1 sampled, 2 has link, 4 names a bootstrap room span |
/// | 4..8 | FNV-1a 32 of bytes 0..4 and 8..48, little-endian |
/// | 8..24 | trace id, big-endian (W3C order) |
/// | 24..32 | parent span id, big-endian |
/// | 32..40 | link span id, big-endian (0 when none) |
/// | 40..48 | sender process tag (tells a same-process hand-over from a remote one) |
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PropagateContext {
    pub(crate) trace_id: u128,
    pub(crate) parent_span_id: u64,
    pub(crate) link_span_id: u64,
    pub(crate) process: u64,
    pub(crate) sampled: bool,
    pub(crate) room: bool,
}

/// Why bytes are not a [`PropagateContext`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    /// Not 48 bytes.
    Length { got: usize },
    /// Does not start with the magic bytes: not a slicetrace context.
    Magic,
    /// A version this build does not read.
    Version(u8),
    /// Flag bits this version does not define.
    Flags(u8),
    /// The checksum does not match: the bytes were changed on the way.
    Checksum,
    /// A zero trace id or parent span id (invalid in W3C trace context).
    ZeroId,
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextError::Length { got } => {
                write!(
                    f,
                    "propagate context must be {CONTEXT_LEN} bytes, got {got}"
                )
            }
            ContextError::Magic => f.write_str("propagate context has no slicetrace magic"),
            ContextError::Version(v) => {
                write!(
                    f,
                    "propagate context version {v} is not supported (this build reads {VERSION})"
                )
            }
            ContextError::Flags(b) => write!(f, "propagate context has unknown flag bits {b:#04x}"),
            ContextError::Checksum => f.write_str("propagate context checksum mismatch"),
            ContextError::ZeroId => f.write_str("propagate context has a zero trace or span id"),
        }
    }
}

impl std::error::Error for ContextError {}

/// FNV-1a 32 over every byte but the checksum's own (4..8).
fn checksum(b: &[u8; CONTEXT_LEN]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for x in b[..4].iter().chain(&b[8..]) {
        h ^= *x as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl PropagateContext {
    pub(crate) fn new(
        trace_id: u128,
        parent_span_id: u64,
        link_span_id: u64,
        process: u64,
        sampled: bool,
    ) -> Self {
        PropagateContext {
            trace_id,
            parent_span_id,
            link_span_id,
            process,
            sampled,
            room: false,
        }
    }

    /// This context with `span` as the parent of what the receiver records.
    pub(crate) fn with_parent(mut self, span: u64) -> Self {
        self.parent_span_id = span;
        self
    }

    /// This context with `link` as the span the receiver's first top-level slice links to
    /// (`None` or 0: no link). For a context read from elsewhere: SGLang's `prev_span`, say.
    #[must_use]
    pub fn with_link(mut self, link: Option<u64>) -> Self {
        self.link_span_id = link.unwrap_or(0);
        self
    }

    /// This context as naming a bootstrap room span of another node (what a cross-node
    /// header carries): a `req_start` under it hangs its request span there and opens no room
    /// span of its own.
    #[must_use]
    pub fn for_room(mut self) -> Self {
        self.room = true;
        self
    }

    /// The parent names a bootstrap room span, not a request span.
    pub fn names_room(&self) -> bool {
        self.room
    }

    /// The 128-bit W3C trace id.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The span the receiver's spans hang under (the sender's request span).
    pub fn parent_span_id(&self) -> u64 {
        self.parent_span_id
    }

    /// The sender's slice the receiver's first slice links to, if the sender had one.
    pub fn link_span_id(&self) -> Option<u64> {
        (self.link_span_id != 0).then_some(self.link_span_id)
    }

    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    pub fn to_bytes(&self) -> [u8; CONTEXT_LEN] {
        let mut b = [0u8; CONTEXT_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3] = (self.sampled as u8 * FLAG_SAMPLED)
            | ((self.link_span_id != 0) as u8 * FLAG_HAS_LINK)
            | (self.room as u8 * FLAG_ROOM);
        b[8..24].copy_from_slice(&self.trace_id.to_be_bytes());
        b[24..32].copy_from_slice(&self.parent_span_id.to_be_bytes());
        b[32..40].copy_from_slice(&self.link_span_id.to_be_bytes());
        b[40..48].copy_from_slice(&self.process.to_be_bytes());
        let sum = checksum(&b);
        b[4..8].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes and validates bytes made by [`to_bytes`](Self::to_bytes). Never panics.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ContextError> {
        let b: &[u8; CONTEXT_LEN] = b
            .try_into()
            .map_err(|_| ContextError::Length { got: b.len() })?;
        if b[0..2] != MAGIC {
            return Err(ContextError::Magic);
        }
        if b[2] != VERSION {
            return Err(ContextError::Version(b[2]));
        }
        let flags = b[3];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(ContextError::Flags(flags));
        }
        let sum = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if sum != checksum(b) {
            return Err(ContextError::Checksum);
        }
        let trace_id = u128::from_be_bytes(b[8..24].try_into().unwrap_or_default());
        let parent = u64::from_be_bytes(b[24..32].try_into().unwrap_or_default());
        let link = u64::from_be_bytes(b[32..40].try_into().unwrap_or_default());
        let process = u64::from_be_bytes(b[40..48].try_into().unwrap_or_default());
        if trace_id == 0 || parent == 0 {
            return Err(ContextError::ZeroId);
        }
        if (link != 0) != (flags & FLAG_HAS_LINK != 0) {
            return Err(ContextError::Flags(flags));
        }
        Ok(PropagateContext {
            trace_id,
            parent_span_id: parent,
            link_span_id: link,
            process,
            sampled: flags & FLAG_SAMPLED != 0,
            room: flags & FLAG_ROOM != 0,
        })
    }
}

/// Why a `traceparent` header value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceparentError {
    /// Not `version-traceid-parentid-flags` with 2, 32, 16 and 2 lowercase hex digits.
    Format,
    /// Version `ff`, which W3C forbids.
    Version,
    /// An all-zero trace id or parent id.
    ZeroId,
}

impl fmt::Display for TraceparentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceparentError::Format => {
                "traceparent must be version-traceid-parentid-flags in lowercase hex (2-32-16-2 digits)"
            }
            TraceparentError::Version => "traceparent version ff is invalid",
            TraceparentError::ZeroId => "traceparent has an all-zero trace id or parent id",
        })
    }
}

impl std::error::Error for TraceparentError {}

fn hex_field(s: &str, len: usize) -> Result<u128, TraceparentError> {
    if s.len() != len
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(TraceparentError::Format);
    }
    u128::from_str_radix(s, 16).map_err(|_| TraceparentError::Format)
}

impl PropagateContext {
    /// The W3C `traceparent` header value for a call made on behalf of this request: the
    /// receiver's spans hang under the request span.
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_span_id, self.sampled as u8
        )
    }

    /// Reads a W3C `traceparent` header value (an HTTP gateway's, say), by the W3C rules:
    /// version 00 is exactly 55 characters; a later version may carry more after a `-`.
    /// The context has no link (the gateway's span is the parent).
    pub fn from_traceparent(value: &str) -> Result<Self, TraceparentError> {
        let v = value.trim_matches([' ', '\t']);
        if !v.is_ascii() {
            return Err(TraceparentError::Format);
        }
        let version = hex_field(v.get(..2).ok_or(TraceparentError::Format)?, 2)?;
        if version == 0xff {
            return Err(TraceparentError::Version);
        }
        if v.len() < 55
            || (version == 0 && v.len() != 55)
            || (v.len() > 55 && v.as_bytes()[55] != b'-')
        {
            return Err(TraceparentError::Format);
        }
        let b = v.as_bytes();
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceparentError::Format);
        }
        let trace_id = hex_field(&v[3..35], 32)?;
        let parent = hex_field(&v[36..52], 16)? as u64;
        let flags = hex_field(&v[53..55], 2)? as u8;
        if trace_id == 0 || parent == 0 {
            return Err(TraceparentError::ZeroId);
        }
        Ok(PropagateContext {
            trace_id,
            parent_span_id: parent,
            link_span_id: 0,
            process: 0,
            sampled: flags & 1 != 0,
            room: false,
        })
    }
}

impl fmt::Debug for PropagateContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PropagateContext {{ trace: {:032x}, parent: {:016x}, link: {:016x}, sampled: {}, \
             room: {} }}",
            self.trace_id, self.parent_span_id, self.link_span_id, self.sampled, self.room
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PropagateContext {
        PropagateContext::new(0x0123_4567_89ab_cdef_0011_2233_4455_6677, 42, 7, 99, true)
    }

    #[test]
    fn round_trips() {
        let c = ctx();
        assert_eq!(PropagateContext::from_bytes(&c.to_bytes()), Ok(c));
        let no_link = PropagateContext::new(5, 6, 0, 1, false);
        assert_eq!(
            PropagateContext::from_bytes(&no_link.to_bytes()),
            Ok(no_link)
        );
        let room = no_link.with_link(Some(9)).for_room();
        assert!(room.names_room() && !no_link.names_room());
        assert_eq!(room.link_span_id(), Some(9));
        assert_eq!(PropagateContext::from_bytes(&room.to_bytes()), Ok(room));
        assert_eq!(room.with_link(None).link_span_id(), None);
        assert_eq!(room.with_link(Some(0)).link_span_id(), None);
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let good = ctx().to_bytes();
        for i in 0..CONTEXT_LEN {
            for bit in 0..8 {
                let mut b = good;
                b[i] ^= 1 << bit;
                assert!(
                    PropagateContext::from_bytes(&b).is_err(),
                    "byte {i} bit {bit} passed"
                );
            }
        }
    }

    #[test]
    fn traceparent_round_trips_and_follows_the_w3c_rules() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = PropagateContext::from_traceparent(tp).unwrap();
        assert_eq!(c.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(c.parent_span_id(), 0x00f067aa0ba902b7);
        assert!(c.is_sampled());
        assert_eq!(c.link_span_id(), None);
        assert_eq!(c.to_traceparent(), tp);
        assert_eq!(
            PropagateContext::from_traceparent(&format!(" {tp}\t")).unwrap(),
            c
        );
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(!PropagateContext::from_traceparent(later)
            .unwrap()
            .is_sampled());
        use TraceparentError::*;
        for (bad, why) in [
            ("", Format),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                Format,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                Format,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-011",
                Format,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Format,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Version,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroId,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                Format,
            ),
            (
                "é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Format,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01é---",
                Format,
            ),
        ] {
            assert_eq!(PropagateContext::from_traceparent(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn truncated_and_foreign_bytes_are_errors() {
        let good = ctx().to_bytes();
        for n in 0..CONTEXT_LEN {
            assert_eq!(
                PropagateContext::from_bytes(&good[..n]),
                Err(ContextError::Length { got: n })
            );
        }
        assert_eq!(
            PropagateContext::from_bytes(&[0u8; CONTEXT_LEN]),
            Err(ContextError::Magic)
        );
        let mut v2 = good;
        v2[2] = 2;
        assert_eq!(
            PropagateContext::from_bytes(&v2),
            Err(ContextError::Version(2))
        );
    }
}
