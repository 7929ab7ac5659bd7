//! Every ring in the process, and how a ring passes from one thread to the next.
//!
//! A ring is owned by at most one thread at a time. States:
//! `FREE` → (a thread claims it, under the registry lock) → `OWNED` → (the thread exits: its
//! thread-local destructor stores `DETACHED` with `Release`, after its last push) → `DETACHED` →
//! (the drainer loads the state with `Acquire`, drains to the final tail, closes that owner's
//! state) → `FREE`. A new owner never sees an undrained ring, so two threads' records never mix,
//! and the drainer tells owners apart by the `owner` number a claim increments.
//!
//! `thread_local::ThreadLocal` would hand an exited thread's value, records still unread, to the
//! next thread that reuses its id; this registry instead reuses a ring only once it is drained.

use crate::ring::Ring;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const FREE: u32 = 0;
pub const OWNED: u32 = 1;
pub const DETACHED: u32 = 2;

/// Who owns a ring now, as the thread told us (`set_thread_info`) or as the OS names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadMeta {
    /// The OS thread id (Linux `gettid`).
    pub tid: u64,
    /// `std::thread::Thread::name`, or `thread-{tid}`.
    pub name: String,
    pub label: Option<String>,
    pub tp_rank: Option<u32>,
    pub dp_rank: Option<u32>,
}

impl ThreadMeta {
    pub fn current() -> ThreadMeta {
        let tid = os_thread_id();
        let name = std::thread::current()
            .name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("thread-{tid}"));
        ThreadMeta {
            tid,
            name,
            ..ThreadMeta::default()
        }
    }

    /// The label spans carry: the one set, else the thread's name.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }
}

#[cfg(target_os = "linux")]
fn os_thread_id() -> u64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u64 }
}

#[cfg(not(target_os = "linux"))]
fn os_thread_id() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

pub struct RingSlot {
    pub ring: Ring,
    pub index: u32,
    state: AtomicU32,
    /// Incremented at each claim; `(index, owner)` names one thread's tenure.
    owner: AtomicU32,
    meta: Mutex<ThreadMeta>,
}

impl RingSlot {
    pub fn state(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }

    pub fn owner(&self) -> u32 {
        self.owner.load(Ordering::Acquire)
    }

    pub fn meta(&self) -> ThreadMeta {
        self.meta.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn update_meta(&self, f: impl FnOnce(&mut ThreadMeta)) {
        f(&mut self.meta.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Called by the owning thread as it exits, after its last push.
    pub fn detach(&self) {
        DETACHED_NOW.fetch_add(1, Ordering::Relaxed);
        self.state.store(DETACHED, Ordering::Release);
        wake_drainer();
    }

    /// Called by the drainer once a detached ring is drained to its final tail.
    pub fn release(&self) {
        self.state.store(FREE, Ordering::Release);
        DETACHED_NOW.fetch_sub(1, Ordering::Relaxed);
    }

    /// Frees a detached ring when no drainer runs; a compare-and-swap, since a thread starting
    /// at the same moment may take the detached ring itself.
    pub fn release_if_detached(&self) {
        if self
            .state
            .compare_exchange(DETACHED, FREE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            DETACHED_NOW.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

struct Registry {
    slots: Mutex<Vec<&'static RingSlot>>,
    count: AtomicUsize,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        slots: Mutex::new(Vec::new()),
        count: AtomicUsize::new(0),
    })
}

/// Set while a drainer runs. Without one, nobody would move a detached ring back to `FREE`, so a
/// claim may take it directly: what it still holds was written outside any session.
pub static DRAINER_LIVE: AtomicBool = AtomicBool::new(false);

/// The live drainer's thread. A thread that exits wakes it, so that its ring is drained and freed
/// before the next new thread looks for one: a burst of short-lived threads then reuses a few
/// rings instead of each making its own.
pub static DRAINER_THREAD: std::sync::Mutex<Option<std::thread::Thread>> =
    std::sync::Mutex::new(None);

fn wake_drainer() {
    // Never waits: a thread exiting while the session starts or stops just does not wake it.
    if let Ok(t) = DRAINER_THREAD.try_lock() {
        if let Some(t) = t.as_ref() {
            t.unpark();
        }
    }
}

/// Rings whose threads have exited and that the drainer has not freed yet.
static DETACHED_NOW: AtomicUsize = AtomicUsize::new(0);

/// How long a new thread's first traced call waits for the drainer to free an exited thread's
/// ring before it makes a ring of its own.
const CLAIM_WAIT: Duration = Duration::from_millis(2);

/// A free ring of capacity `cap` (or, with no drainer running, a detached one), now owned.
fn take_free(slots: &[&'static RingSlot], cap: u64) -> Option<&'static RingSlot> {
    let no_drainer = !DRAINER_LIVE.load(Ordering::Acquire);
    slots.iter().copied().find(|s| {
        s.ring.capacity() == cap
            && (s
                .state
                .compare_exchange(FREE, OWNED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
                || (no_drainer
                    && s.state
                        .compare_exchange(DETACHED, OWNED, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    && {
                        DETACHED_NOW.fetch_sub(1, Ordering::Relaxed);
                        true
                    }))
    })
}

/// Gives the calling thread a ring (a free one of the right size, else a new one) and the owner
/// number of its tenure.
///
/// A burst of short-lived threads can outrun the drainer, which frees an exited thread's ring
/// once it has read it; each thread starting meanwhile would make a new ring (512 KiB at the
/// default size) that then stays. So when no ring is free but some await the drainer, the
/// thread wakes the drainer and waits for one, at most `CLAIM_WAIT`, once, at its first traced
/// call.
pub fn claim(capacity: usize) -> (&'static RingSlot, u32) {
    let reg = registry();
    let cap = capacity.max(2).next_power_of_two() as u64;
    let mut reusable = take_free(&reg.slots.lock().unwrap_or_else(|e| e.into_inner()), cap);
    if reusable.is_none()
        && DRAINER_LIVE.load(Ordering::Acquire)
        && DETACHED_NOW.load(Ordering::Relaxed) > 0
    {
        wake_drainer();
        let until = Instant::now() + CLAIM_WAIT;
        while reusable.is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(20));
            reusable = take_free(&reg.slots.lock().unwrap_or_else(|e| e.into_inner()), cap);
        }
    }
    let mut slots = reg.slots.lock().unwrap_or_else(|e| e.into_inner());
    let slot = match reusable.or_else(|| take_free(&slots, cap)) {
        Some(s) => s,
        None => {
            let s: &'static RingSlot = Box::leak(Box::new(RingSlot {
                ring: Ring::new(capacity),
                index: slots.len() as u32,
                state: AtomicU32::new(OWNED),
                owner: AtomicU32::new(0),
                meta: Mutex::new(ThreadMeta::default()),
            }));
            slots.push(s);
            reg.count.store(slots.len(), Ordering::Release);
            s
        }
    };
    *slot.meta.lock().unwrap_or_else(|e| e.into_inner()) = ThreadMeta::current();
    let owner = slot.owner.fetch_add(1, Ordering::AcqRel) + 1;
    (slot, owner)
}

/// Number of rings made so far; the drainer re-reads the list when it grows.
pub fn ring_count() -> usize {
    registry().count.load(Ordering::Acquire)
}

/// A copy of the list of rings.
pub fn snapshot(out: &mut Vec<&'static RingSlot>) {
    let slots = registry().slots.lock().unwrap_or_else(|e| e.into_inner());
    out.clear();
    out.extend(slots.iter().copied());
}
