//! Request ids, and how trace and span ids are made without coordination.
//!
//! Span ids are derived, not drawn: `derive(seed, position, salt)` where `seed` is random per
//! (process, ring, owner) and `position` is the ring position of the record that opened the span.
//! For a fixed seed the map from `(position, salt)` to id is a bijection (two rounds of the
//! splitmix64 finaliser around an xor), so one thread never repeats an id; across threads and
//! processes the seeds are independent random values, which gives the same collision odds as
//! random ids. The traced thread can therefore name a span it opened (for a propagated context)
//! without asking the drainer, and the drainer rebuilds the same id from the same position.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// A request id: a small `Copy` value to keep and pass on the hot path.
///
/// Made from an integer as is, or from a string by a fixed hash that every process computes the
/// same way (so a head-sampling decision taken on it agrees everywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rid(pub u64);

impl Rid {
    /// Hashes a string request id (FNV-1a, then a finaliser for well-mixed bits).
    pub fn from_str_id(s: &str) -> Rid {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in s.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rid(mix64(h))
    }
}

impl From<u64> for Rid {
    fn from(v: u64) -> Rid {
        Rid(v)
    }
}

impl From<&str> for Rid {
    fn from(s: &str) -> Rid {
        Rid::from_str_id(s)
    }
}

impl From<&String> for Rid {
    fn from(s: &String) -> Rid {
        Rid::from_str_id(s)
    }
}

pub use slicetrace_spans::util::mix64;

/// What a derived id names, so one record position can open more than one span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Salt(u64);

impl Salt {
    /// A slice opened by a start record.
    pub const SLICE: Salt = Salt(0);
    /// The anonymous slice an end record opens (`auto_next_anon`).
    pub const NEXT_ANON: Salt = Salt(1);
    /// The request span opened by a `ReqStart` record.
    pub const REQUEST: Salt = Salt(2);
    /// A thread span, opened by the first record of a request on a thread.
    pub const THREAD: Salt = Salt(3);
    /// The bootstrap room span above a request started by a `ReqStart` record.
    pub const ROOM: Salt = Salt(7);
    /// An async slice opened by a `TaskStart` record.
    pub const TASK: Salt = Salt(8);

    /// The anonymous slice opened by item `k` (0, 1, 2) of a packed batch record.
    pub const fn batch_item(k: u8) -> Salt {
        Salt(4 + k as u64)
    }

    /// The salt of the anonymous slice an end opens: `sub` is `Decoded::sub` (0 for a plain
    /// end record, 1 + index for a batch item).
    pub const fn next_anon(sub: u8) -> Salt {
        if sub == 0 {
            Salt::NEXT_ANON
        } else {
            Salt::batch_item(sub - 1)
        }
    }
}

/// A non-zero 64-bit id for `(seed, pos, salt)`; bijective in `(pos, salt)` for `pos < 2^60`.
#[inline]
pub fn derive_span_id(seed: u64, pos: u64, salt: Salt) -> u64 {
    nonzero(mix64(seed ^ mix64((pos << 4) | salt.0)))
}

/// A non-zero 128-bit trace id for a request started at `pos`.
pub fn derive_trace_id(seed: u64, pos: u64) -> u128 {
    // Both halves independent of the request span's id, which derives from the same position.
    let x = derive_span_id(seed, pos, Salt::REQUEST);
    let lo = nonzero(mix64(x ^ seed.rotate_left(29) ^ 0x2545_f491_4f6c_dd1d));
    let hi = mix64(lo ^ seed.rotate_left(17) ^ 0x5bd1_e995_0000_0001);
    ((hi as u128) << 64) | lo as u128
}

#[inline]
fn nonzero(v: u64) -> u64 {
    if v == 0 {
        1
    } else {
        v
    }
}

/// 128 random bits per process: drawn at first use, and changed in a forked child at the fork
/// (see [`reseed_in_child`]).
pub fn process_seed() -> [u64; 2] {
    let b = base_seed();
    [
        b[0] ^ FORK_SALT[0].load(Ordering::Relaxed),
        b[1] ^ FORK_SALT[1].load(Ordering::Relaxed),
    ]
}

/// The random part, made once, lock-free: a `OnceLock` being drawn by another thread at a fork
/// would stay "being initialised" in the child, which would wait on it forever. Two threads
/// racing here each draw one; the loser's is dropped unused.
static BASE: AtomicPtr<[u64; 2]> = AtomicPtr::new(std::ptr::null_mut());
/// What a forked child mixes in, so that its seed is not the parent's: it would otherwise
/// derive the very ids the parent derives for the same ring positions.
static FORK_SALT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn base_seed() -> &'static [u64; 2] {
    crate::fork::make_once(&BASE, draw_seed)
}

/// In a forked child, right after the fork (from its fork handler: atomic stores and two
/// system calls that are safe there). Done at the fork, before any thread of the child claims
/// a ring, so that the child's threads and its drainer derive ids from one seed. The salt
/// mixes the child's pid and the time into the parent's salt: siblings differ by pid, a later
/// child with a reused pid by time, and a grandchild from its parent.
pub(crate) fn reseed_in_child() {
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() } as u64;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let t = (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64);
    let s = [
        FORK_SALT[0].load(Ordering::Relaxed),
        FORK_SALT[1].load(Ordering::Relaxed),
    ];
    FORK_SALT[0].store(
        mix64(s[0] ^ mix64(pid ^ 0x6368_696c_6400_0001) ^ mix64(t)),
        Ordering::Relaxed,
    );
    FORK_SALT[1].store(
        mix64(s[1] ^ mix64(pid.rotate_left(32) ^ 0x6368_696c_6400_0002) ^ mix64(!t)),
        Ordering::Relaxed,
    );
}

fn draw_seed() -> [u64; 2] {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to what differs between processes and runs.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let addr = &b as *const _ as u64;
        b[..8].copy_from_slice(&mix64(t ^ std::process::id() as u64).to_le_bytes());
        b[8..].copy_from_slice(&mix64(addr ^ t.rotate_left(32)).to_le_bytes());
    }
    let mut halves = [0u64; 2];
    for (h, bytes) in halves.iter_mut().zip(b.chunks_exact(8)) {
        let mut a = [0u8; 8];
        a.copy_from_slice(bytes);
        *h = u64::from_le_bytes(a);
    }
    halves
}

/// Tells this process's contexts from other processes' (carried in `PropagateContext`).
pub fn process_tag() -> u64 {
    nonzero(mix64(process_seed()[1] ^ 0x7072_6f63_6573_7321))
}

/// The id seed of one ring owner: independent for each ring, owner and process.
pub fn owner_seed(ring_index: u32, owner: u32) -> u64 {
    let p = process_seed();
    mix64(p[0] ^ mix64(((ring_index as u64) << 32) | owner as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn derived_ids_do_not_repeat_within_a_seed() {
        let mut seen = HashSet::new();
        for pos in 0..50_000u64 {
            for salt in [
                Salt::SLICE,
                Salt::NEXT_ANON,
                Salt::REQUEST,
                Salt::THREAD,
                Salt::ROOM,
                Salt::batch_item(0),
                Salt::batch_item(1),
                Salt::batch_item(2),
            ] {
                assert!(seen.insert(derive_span_id(42, pos, salt)));
            }
        }
    }

    /// Pinned, because every process must compute the same rid from the same text: FNV-1a 64
    /// (offset basis 0xcbf29ce484222325, prime 0x100000001b3) of the bytes, then `mix64`, the
    /// splitmix64 finaliser (xor-shift 30, × 0xbf58476d1ce4e5b9, xor-shift 27,
    /// × 0x94d049bb133111eb, xor-shift 31).
    #[test]
    fn string_rids_are_pinned_values() {
        // splitmix64's first output from seed 0 is mix64 of its increment 0x9e3779b97f4a7c15.
        assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        // FNV-1a 64 of "", "a" and "foobar" are the published vectors 0xcbf29ce484222325,
        // 0xaf63dc4c8601ec8c and 0x85944171f73967e8; these are their mix64.
        for (text, rid) in [
            ("", 0xf52a_15e9_a9b5_e89b),
            ("a", 0x02c0_bdbf_4814_20f8),
            ("foobar", 0x404d_a9e3_b740_78c2),
        ] {
            assert_eq!(Rid::from(text), Rid(rid), "{text:?}");
            assert_eq!(
                Rid::from(&text.to_owned()),
                Rid(rid),
                "{text:?} as a String"
            );
        }
        assert_ne!(Rid::from("abc"), Rid::from("abd"));
    }

    #[test]
    fn owner_seeds_differ() {
        assert_ne!(owner_seed(0, 0), owner_seed(0, 1));
        assert_ne!(owner_seed(0, 0), owner_seed(1, 0));
    }
}
