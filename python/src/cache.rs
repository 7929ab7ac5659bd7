//! Per-thread caches keyed by Python string objects: the interned `Name` of a slice, event or
//! attribute name, and the `Rid` of a request id.
//!
//! A hit compares one pointer. Each entry holds a strong reference to its string, so the
//! address cannot be freed and reused by another string while the entry lives (a `str` is
//! immutable: same object, same text). Two-way sets: the decode loop walks the same few hundred
//! rids every step, and a direct-mapped table would evict the same conflicting pairs each time.

use pyo3::prelude::*;
use pyo3::types::PyString;
use slicetrace::{Name, Rid};
use std::cell::RefCell;

/// One set: the two keys' addresses and values, 32 bytes, so that a lookup reads one line.
/// Address 0 marks an empty way (no object lives there).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Set<V: Copy> {
    ptrs: [usize; 2],
    values: [V; 2],
}

/// A two-way set-associative map from string objects to `V`. The strong references sit apart
/// from the sets, touched only when an entry is filed or moves.
struct StrCache<V: Copy> {
    sets: Vec<Set<V>>,
    keys: Vec<[Option<Py<PyString>>; 2]>,
}

impl<V: Copy> StrCache<V> {
    /// `sets` must be a power of two.
    fn new(sets: usize, empty: V) -> Self {
        StrCache {
            sets: vec![
                Set {
                    ptrs: [0; 2],
                    values: [empty; 2],
                };
                sets
            ],
            keys: (0..sets).map(|_| [None, None]).collect(),
        }
    }

    #[inline]
    fn set_of(&self, ptr: usize) -> usize {
        // Objects are 16-byte aligned; higher bits are folded in so that neighbours spread.
        ((ptr >> 4) ^ (ptr >> 14)) & (self.sets.len() - 1)
    }

    #[inline]
    fn get(&mut self, ptr: usize) -> Option<V> {
        let i = self.set_of(ptr);
        let set = &mut self.sets[i];
        if set.ptrs[0] == ptr {
            return Some(set.values[0]);
        }
        if set.ptrs[1] == ptr {
            set.ptrs.swap(0, 1);
            set.values.swap(0, 1);
            self.keys[i].swap(0, 1);
            return Some(set.values[0]);
        }
        None
    }

    /// Files `key` as the most recent of its set; returns the evicted string, for the caller
    /// to drop once the cache is no longer borrowed (dropping a `str` subclass may run Python
    /// code, which may call back into this module).
    fn put(&mut self, key: &Bound<'_, PyString>, value: V) -> Option<Py<PyString>> {
        let ptr = key.as_ptr() as usize;
        let i = self.set_of(ptr);
        let (set, keys) = (&mut self.sets[i], &mut self.keys[i]);
        set.ptrs.swap(0, 1);
        set.values.swap(0, 1);
        keys.swap(0, 1);
        set.ptrs[0] = ptr;
        set.values[0] = value;
        keys[0].replace(key.clone().unbind())
    }

    fn len(&self) -> usize {
        self.keys.iter().flatten().filter(|k| k.is_some()).count()
    }
}

/// Sets of the rid cache: 2048 entries, room for several decode batches of 256.
const RID_SETS: usize = 1024;
/// Sets of the name cache: names are few (stages, event and attribute keys).
const NAME_SETS: usize = 128;

struct Caches {
    names: StrCache<&'static Name>,
    rids: StrCache<Rid>,
}

static PLACEHOLDER: Name = Name::new("");

thread_local! {
    // Allocated on a thread's first traced call; `const` so that the access needs no lazy
    // initialisation check.
    static CACHES: RefCell<Option<Box<Caches>>> = const { RefCell::new(None) };
}

fn new_caches() -> Box<Caches> {
    Box::new(Caches {
        names: StrCache::new(NAME_SETS, &PLACEHOLDER),
        rids: StrCache::new(RID_SETS, Rid(0)),
    })
}

fn with_caches<R>(f: impl FnOnce(&mut Caches) -> R) -> Option<R> {
    CACHES
        .try_with(|c| {
            // A failed borrow means a call re-entered from a string's destructor: it goes
            // uncached.
            let mut c = c.try_borrow_mut().ok()?;
            let c = c.get_or_insert_with(new_caches);
            Some(f(c))
        })
        .ok()
        .flatten()
}

/// The interned name for the text of `s` (each distinct text is interned once per process).
#[inline]
pub fn name(s: &Bound<'_, PyString>) -> PyResult<&'static Name> {
    let ptr = s.as_ptr() as usize;
    if let Some(Some(n)) = with_caches(|c| c.names.get(ptr)) {
        return Ok(n);
    }
    let n = Name::intern(s.to_str()?);
    let old = with_caches(|c| c.names.put(s, n)).flatten();
    drop(old);
    Ok(n)
}

/// The request id of the text of `s`, hashed as the core hashes string ids.
#[inline]
pub fn rid(s: &Bound<'_, PyString>) -> PyResult<Rid> {
    let ptr = s.as_ptr() as usize;
    if let Some(Some(r)) = with_caches(|c| c.rids.get(ptr)) {
        return Ok(r);
    }
    let r = Rid::from_str_id(s.to_str()?);
    let old = with_caches(|c| c.rids.put(s, r)).flatten();
    drop(old);
    Ok(r)
}

/// [`name`] and [`rid`] of one call in one visit to the caches, when both are there.
#[inline]
pub fn name_and_rid(
    n: &Bound<'_, PyString>,
    r: &Bound<'_, PyString>,
) -> PyResult<(&'static Name, Rid)> {
    let (np, rp) = (n.as_ptr() as usize, r.as_ptr() as usize);
    if let Some((Some(a), Some(b))) = with_caches(|c| (c.names.get(np), c.rids.get(rp))) {
        return Ok((a, b));
    }
    Ok((name(n)?, rid(r)?))
}

/// Runs `f` with one borrow of the calling thread's rid cache for a whole batch: `f` gets the
/// lookup. Strings evicted meanwhile are dropped after the borrow ends. Python code that `f`
/// runs (a `rid` property) and that calls back into this module finds the cache borrowed and
/// goes uncached; so does `f` itself when the cache is borrowed already. During the thread's
/// teardown, when the cache is gone, `f` does not run.
pub fn with_rid_lookup<F>(f: F) -> PyResult<()>
where
    F: FnOnce(&mut dyn FnMut(&Bound<'_, PyString>) -> PyResult<Rid>) -> PyResult<()>,
{
    let mut evicted: Vec<Py<PyString>> = Vec::new();
    let ran = CACHES.try_with(|c| match c.try_borrow_mut() {
        Ok(mut c) => {
            let caches = c.get_or_insert_with(new_caches);
            let mut look = |s: &Bound<'_, PyString>| -> PyResult<Rid> {
                if let Some(r) = caches.rids.get(s.as_ptr() as usize) {
                    return Ok(r);
                }
                let r = Rid::from_str_id(s.to_str()?);
                evicted.extend(caches.rids.put(s, r));
                Ok(r)
            };
            Ok(f(&mut look))
        }
        Err(_) => Err(f),
    });
    drop(evicted);
    match ran {
        Ok(Ok(r)) => r,
        Ok(Err(f)) => f(&mut |s| Ok(Rid::from_str_id(s.to_str()?))),
        Err(_) => Ok(()),
    }
}

/// Entries held by the calling thread's caches: (names, rids).
pub fn sizes() -> (usize, usize) {
    with_caches(|c| (c.names.len(), c.rids.len())).unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_ways_keep_both_conflicting_keys_and_evict_the_older() {
        Python::initialize();
        Python::attach(|py| {
            let mut c = StrCache::new(1, 0u32);
            let (a, b, d) = (
                PyString::new(py, "a-key"),
                PyString::new(py, "b-key"),
                PyString::new(py, "d-key"),
            );
            let p = |s: &Bound<'_, PyString>| s.as_ptr() as usize;
            assert!(c.put(&a, 1).is_none());
            assert!(c.put(&b, 2).is_none());
            assert_eq!((c.get(p(&a)), c.get(p(&b))), (Some(1), Some(2)));
            // `b` was used last: `a` goes.
            let evicted = c.put(&d, 3).expect("a full set evicts");
            assert_eq!(evicted.bind(py).to_str().unwrap(), "a-key");
            assert_eq!(
                (c.get(p(&a)), c.get(p(&b)), c.get(p(&d))),
                (None, Some(2), Some(3))
            );
            assert_eq!(c.len(), 2);
        });
    }
}
