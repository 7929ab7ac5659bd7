//! Interned names for slices, events and attribute keys.
//!
//! A record carries a 32-bit name id, never the text. A [`Name`] is a `static` that learns its id
//! on first use (one mutex-guarded registration per name per process); after that, using it is
//! one relaxed load. The drainer turns ids back into `&'static str` through its own copy of the
//! table, so it never takes the lock for a name it has seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// A slice, event or attribute name. Declare it once with [`name!`](crate::name!) or
/// [`Name::new`] in a `static`; [`Name::intern`] makes one from a runtime string.
pub struct Name {
    text: &'static str,
    id: AtomicU32,
}

impl Name {
    pub const fn new(text: &'static str) -> Name {
        Name {
            text,
            id: AtomicU32::new(0),
        }
    }

    /// A name for a string known only at run time. Each distinct string is leaked once and kept
    /// for the life of the process, so use it for a bounded set of names.
    pub fn intern(text: &str) -> &'static Name {
        let Some(mut t) = lock_table() else {
            // Not registered: it registers itself at its first traced use.
            let text: &'static str = Box::leak(text.to_owned().into_boxed_str());
            return Box::leak(Box::new(Name::new(text)));
        };
        if let Some(&id) = t.by_text.get(text) {
            return t.names[id as usize - 1];
        }
        let text: &'static str = Box::leak(text.to_owned().into_boxed_str());
        let name: &'static Name = Box::leak(Box::new(Name::new(text)));
        let id = t.add(name);
        name.id.store(id, Ordering::Relaxed);
        name
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
}

struct Table {
    names: Vec<&'static Name>,
    by_text: HashMap<&'static str, u32>,
}

impl Table {
    fn add(&mut self, name: &'static Name) -> u32 {
        self.names.push(name);
        let id = self.names.len() as u32;
        self.by_text.insert(name.text, id);
        id
    }
}

fn table() -> &'static Mutex<Table> {
    static TABLE: std::sync::OnceLock<Mutex<Table>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        Mutex::new(Table {
            names: Vec::new(),
            by_text: HashMap::new(),
        })
    })
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
            let t = table().lock().unwrap_or_else(|e| e.into_inner());
            self.names = t.names.iter().map(|n| n.text).collect();
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
    }
}
