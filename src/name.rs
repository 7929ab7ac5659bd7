//! Interned names for slices, events and attribute keys.
//!
//! A record carries a 32-bit name id, never the text. A [`Name`] is a `static` that learns its id
//! on first use (one mutex-guarded registration per name per process); after that, using it is
//! one relaxed load. The drainer turns ids back into `&'static str` through its own copy of the
//! table, so it never takes the lock for a name it has seen.
//!
//! Names made at run time ([`Name::intern`]) are leaked, and a program may build them from data
//! (a request id in a stage name), so their number and text are bounded: past
//! [`MAX_INTERNED_NAMES`] or [`MAX_INTERNED_BYTES`], a new string is recorded as
//! [`OVERFLOW_NAME`] and counted. Statics are not counted: the program's code bounds them, and a
//! name written in the code keeps its own text however many strings came before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// Distinct strings [`Name::intern`] keeps in a process. A server's stage, event and attribute
/// names number in the tens to hundreds, and names made from a fixed set (per layer, per
/// operation) may reach thousands; this leaves room for those, while names built from request
/// data stop taking memory after about 12 MiB (measured: 190 bytes for each name of 16 bytes,
/// with the table, its index and the drainer's copy). Ids are 32-bit, so the bound is for
/// memory, not for the id space.
pub const MAX_INTERNED_NAMES: usize = 65_536;

/// Bytes of text those strings may hold together (4 MiB): without it, 65 536 long names would
/// still take what their length allows.
pub const MAX_INTERNED_BYTES: usize = 4 << 20;

/// The name [`Name::intern`] returns for a new string once either bound is reached: spans,
/// events and attribute keys with such a name are recorded under this one, and each refusal
/// is counted (`Stats::names_refused`).
pub const OVERFLOW_NAME: &str = "slicetrace.name_overflow";

static OVERFLOW: Name = Name::new(OVERFLOW_NAME);

/// Strings refused since the process started; sessions report the change since theirs began.
static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Names made while the table could not be locked (see `Name::intern`), and their bound.
static UNREGISTERED: AtomicU64 = AtomicU64::new(0);
const MAX_UNREGISTERED: u64 = 1024;

/// What one table may take in; the process's table takes the documented bounds, tests smaller.
#[derive(Clone, Copy)]
struct Bounds {
    names: usize,
    bytes: usize,
}

const BOUNDS: Bounds = Bounds {
    names: MAX_INTERNED_NAMES,
    bytes: MAX_INTERNED_BYTES,
};

/// A slice, event or attribute name. Declare it once with [`name!`](crate::name!) or
/// [`Name::new`] in a `static`; [`Name::intern`] makes one from a runtime string.
pub struct Name {
    text: &'static str,
    id: AtomicU32,
    level: u8,
    /// `1 << level`, which a call tests against the levels above the process level (bit 0,
    /// level 0's, is never one of those).
    level_bit: u8,
}

impl Name {
    /// A name at [`DEFAULT_NAME_LEVEL`](crate::limits::DEFAULT_NAME_LEVEL): its slices and
    /// events are recorded unless the process level is 0.
    pub const fn new(text: &'static str) -> Name {
        Name::with_level(text, crate::level::DEFAULT_NAME_LEVEL)
    }

    /// A name whose slices and events are recorded only while the process level
    /// ([`set_level`](crate::set_level)) is at least `level` (at most
    /// [`MAX_LEVEL`](crate::limits::MAX_LEVEL)). Two names of one text share their id whatever
    /// their levels; each call goes by the level of the name it is given.
    pub const fn with_level(text: &'static str, level: u8) -> Name {
        assert!(
            level <= crate::level::MAX_LEVEL,
            "a name's level is at most MAX_LEVEL"
        );
        Name {
            text,
            id: AtomicU32::new(0),
            level,
            level_bit: 1 << level,
        }
    }

    /// This name's trace level.
    pub const fn level(&self) -> u8 {
        self.level
    }

    #[inline(always)]
    pub(crate) const fn level_bit(&self) -> u8 {
        self.level_bit
    }

    /// A name for a string known only at run time. Each distinct string is leaked once and kept
    /// for the life of the process, so use it for a bounded set of names: past
    /// [`MAX_INTERNED_NAMES`] strings or [`MAX_INTERNED_BYTES`] of their text, a new string
    /// gets the shared name [`OVERFLOW_NAME`] and is counted in `Stats::names_refused`
    /// (strings interned before still get their own).
    pub fn intern(text: &str) -> &'static Name {
        let Some(mut t) = lock_table() else {
            // A forked child whose table lock is held forever: a name that registers itself at
            // its first traced use, up to a bound; past it the shared overflow name, counted.
            if UNREGISTERED.fetch_add(1, Ordering::Relaxed) >= MAX_UNREGISTERED {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                return &OVERFLOW;
            }
            let text: &'static str = Box::leak(text.to_owned().into_boxed_str());
            return Box::leak(Box::new(Name::new(text)));
        };
        t.intern(text, BOUNDS, &REFUSED)
    }

    pub fn as_str(&self) -> &'static str {
        self.text
    }

    #[inline]
    pub(crate) fn id(&'static self) -> u32 {
        let id = self.id.load(Ordering::Relaxed);
        if id != 0 {
            id
        } else {
            self.register()
        }
    }

    #[cold]
    fn register(&'static self) -> u32 {
        let Some(mut t) = lock_table() else {
            // No text has this id: a record carrying it is counted as undecodable.
            return u32::MAX;
        };
        let id = match t.by_text.get(self.text) {
            // Two statics with the same text share an id, so a start and an end written with
            // different statics still match by name.
            Some(&id) => id,
            None => t.add(self),
        };
        self.id.store(id, Ordering::Relaxed);
        id
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.text == other.text
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text)
    }
}

/// Declares a `static` [`Name`] in place and yields a `&'static Name` to it.
///
/// ```
/// slicetrace::slice_start(slicetrace::name!("prefill"), 7u64.into());
/// ```
#[macro_export]
macro_rules! name {
    ($text:literal) => {{
        static NAME: $crate::Name = $crate::Name::new($text);
        &NAME
    }};
    ($text:literal, level = $level:expr) => {{
        static NAME: $crate::Name = $crate::Name::with_level($text, $level);
        &NAME
    }};
}

#[derive(Default)]
struct Table {
    names: Vec<&'static Name>,
    by_text: HashMap<&'static str, u32>,
    /// Strings leaked by `intern`, and their bytes: what the bounds apply to.
    interned: usize,
    interned_bytes: usize,
}

impl Table {
    fn add(&mut self, name: &'static Name) -> u32 {
        self.names.push(name);
        let id = self.names.len() as u32;
        self.by_text.insert(name.text, id);
        id
    }

    fn intern(&mut self, text: &str, bounds: Bounds, refused: &AtomicU64) -> &'static Name {
        if let Some(&id) = self.by_text.get(text) {
            return self.names[id as usize - 1];
        }
        if self.interned >= bounds.names
            || text.len() > bounds.bytes.saturating_sub(self.interned_bytes)
        {
            // Not registered here: the overflow name takes its id on first use, as any static,
            // which needs this table's lock.
            refused.fetch_add(1, Ordering::Relaxed);
            return &OVERFLOW;
        }
        self.interned += 1;
        self.interned_bytes += text.len();
        let text: &'static str = Box::leak(text.to_owned().into_boxed_str());
        let name: &'static Name = Box::leak(Box::new(Name::new(text)));
        let id = self.add(name);
        name.id.store(id, Ordering::Relaxed);
        name
    }
}

fn table() -> &'static Mutex<Table> {
    static TABLE: std::sync::OnceLock<Mutex<Table>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(Table::default()))
}

/// Strings `intern` has refused in this process.
pub(crate) fn refused() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Strings `intern` holds in this process (at most [`MAX_INTERNED_NAMES`]).
pub(crate) fn interned() -> usize {
    table().lock().unwrap_or_else(|e| e.into_inner()).interned
}

/// The table, locked; `None` in a forked child that has not started tracing again when the
/// lock is taken: the thread that held it at the fork may not exist there, and would never let
/// go (see `slicetrace::process`).
fn lock_table() -> Option<std::sync::MutexGuard<'static, Table>> {
    if !crate::fork::forked() {
        return Some(table().lock().unwrap_or_else(|e| e.into_inner()));
    }
    match table().try_lock() {
        Ok(t) => Some(t),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Whether the table's lock is free now (for a forked child deciding whether it may trace).
pub(crate) fn table_lock_free() -> bool {
    !matches!(table().try_lock(), Err(std::sync::TryLockError::WouldBlock))
}

/// Runs `f` with the table's lock held (a test of a fork while another thread holds it).
pub(crate) fn while_table_locked(f: impl FnOnce()) {
    let _t = table().lock().unwrap_or_else(|e| e.into_inner());
    f()
}

/// Makes the table, so that a fork never finds it half-made.
pub(crate) fn prepare_table() {
    let _ = table();
}

/// The drainer's lock-free view of the table: refreshed only when it meets an id it lacks.
#[derive(Default)]
pub(crate) struct NameCache {
    names: Vec<&'static str>,
}

impl NameCache {
    /// The text of `id`; `None` for 0 (no name) or an id no name ever had (corrupt input).
    pub fn get(&mut self, id: u32) -> Option<&'static str> {
        if id == 0 {
            return None;
        }
        let i = id as usize - 1;
        if i >= self.names.len() {
            // The table only grows: copy what was added since, not the whole of it again (a
            // program that makes a name per request would otherwise cost the drainer a copy of
            // every name for each new one).
            let t = table().lock().unwrap_or_else(|e| e.into_inner());
            let known = self.names.len();
            self.names
                .extend(t.names.get(known..).unwrap_or(&[]).iter().map(|n| n.text));
        }
        self.names.get(i).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_id_and_cache_resolves() {
        static A: Name = Name::new("name-test-a");
        static A2: Name = Name::new("name-test-a");
        let a = A.id();
        assert_eq!(A2.id(), a);
        assert_eq!(Name::intern("name-test-a").id(), a);
        let b = Name::intern("name-test-b").id();
        assert_ne!(a, b);
        let mut c = NameCache::default();
        assert_eq!(c.get(a), Some("name-test-a"));
        assert_eq!(c.get(b), Some("name-test-b"));
        assert_eq!(c.get(0), None);
        assert_eq!(c.get(u32::MAX), None);
        // Names added after the cache last looked are found too.
        let d = Name::intern("name-test-d").id();
        assert_eq!(c.get(d), Some("name-test-d"));
        assert_eq!(c.get(a), Some("name-test-a"));
    }

    #[test]
    fn past_either_bound_new_strings_share_the_overflow_name_and_are_counted() {
        // A table of its own, with small bounds: the process's stays as the other tests need it.
        let mut t = Table::default();
        let refused = AtomicU64::new(0);
        let bounds = Bounds {
            names: 3,
            bytes: 64,
        };
        let kept: Vec<_> = ["bound-a", "bound-b", "bound-c"]
            .iter()
            .map(|s| t.intern(s, bounds, &refused))
            .collect();
        assert!(kept.iter().all(|n| !std::ptr::eq(*n, &OVERFLOW)));
        for i in 0..5 {
            let n = t.intern(&format!("bound-over-{i}"), bounds, &refused);
            assert!(std::ptr::eq(n, &OVERFLOW));
            assert_eq!(n.as_str(), OVERFLOW_NAME);
        }
        assert_eq!(refused.load(Ordering::Relaxed), 5);
        // Strings interned before the bound keep their own names; nothing more was leaked.
        assert!(std::ptr::eq(t.intern("bound-b", bounds, &refused), kept[1]));
        assert_eq!((t.interned, t.names.len()), (3, 3));
        assert_eq!(refused.load(Ordering::Relaxed), 5);

        // The text bound: 60 of 64 bytes taken, so 4 more fit and 5 do not.
        let mut t = Table::default();
        let bounds = Bounds {
            names: 100,
            bytes: 64,
        };
        let long = "x".repeat(60);
        assert!(!std::ptr::eq(t.intern(&long, bounds, &refused), &OVERFLOW));
        assert!(std::ptr::eq(t.intern("12345", bounds, &refused), &OVERFLOW));
        assert!(!std::ptr::eq(t.intern("1234", bounds, &refused), &OVERFLOW));
        assert!(std::ptr::eq(t.intern("y", bounds, &refused), &OVERFLOW));
        assert_eq!(refused.load(Ordering::Relaxed), 7);
        assert_eq!(t.interned_bytes, 64);
    }

    #[test]
    fn the_overflow_name_has_an_id_and_resolves() {
        let id = OVERFLOW.id();
        assert_ne!(id, 0);
        assert_eq!(NameCache::default().get(id), Some(OVERFLOW_NAME));
    }
}
