//! Every ring in the process, and how a ring passes from one thread to the next.
//!
//! A ring is owned by at most one thread at a time, and its [`Producer`] travels with the
//! ownership as a value: the owner holds it, gives it back as it exits, and the next owner takes
//! it. States:
//! `FREE` → (a thread claims it, under the registry lock, and takes the producer) → `OWNED` →
//! (the thread exits: its thread-local destructor parks the producer in the slot, after its last
//! push, then stores `DETACHED` with `Release`) → `DETACHED` → (the drainer loads the state with
//! `Acquire`, drains to the final tail, stores `FREE` with `Release`) → `FREE`. A new owner never
//! sees an undrained ring, so two threads' records never mix, and the drainer tells owners apart
//! by the `owner` number a claim increments. The ring's [`Consumer`] stays with the slot while no
//! drainer holds it (see [`Lease`]).
//!
//! `thread_local::ThreadLocal` would hand an exited thread's value, records still unread, to the
//! next thread that reuses its id; this registry instead reuses a ring only once it is drained.

use super::record::Record;
use super::ring::{ring, Consumer, Gauge, Producer};
use crate::sync::{lock, pause, AtomicBool, AtomicU32, AtomicUsize, Mutex, Ordering, SlotCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FREE: u32 = 0;
const OWNED: u32 = 1;
const DETACHED: u32 = 2;

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
    pub pp_rank: Option<u32>,
    /// Thread span names show the PP and DP ranks too, as SGLang 0.5.11 and later write them.
    pub all_ranks_in_name: bool,
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

    /// The ranks the thread span's name shows.
    pub fn name_ranks(&self) -> slicetrace_spans::schema::NameRanks {
        let all = self.all_ranks_in_name;
        slicetrace_spans::schema::NameRanks {
            tp: self.tp_rank,
            pp: self.pp_rank.filter(|_| all),
            dp: self.dp_rank.filter(|_| all),
        }
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

/// One ring and its ownership.
pub struct RingSlot {
    pub index: u32,
    gauge: Gauge,
    state: AtomicU32,
    /// Incremented at each claim; `(index, owner)` names one thread's tenure.
    owner: AtomicU32,
    meta: Mutex<ThreadMeta>,
    /// The producer while no thread owns the ring: parked by [`Registry::detach`], taken by
    /// [`Registry::claim`].
    parked: SlotCell<Option<Producer>>,
    /// The consumer while no drainer holds it.
    consumer: Mutex<Option<Consumer>>,
}

// SAFETY: `parked` is the one field that is not `Sync`. Its owner writes it and then stores
// `DETACHED` (Release); a claimer reads it only after its compare-exchange to `OWNED` (Acquire)
// succeeded, from that `DETACHED`, or from the `FREE` the drainer stores (Release) after it
// loaded `DETACHED` (Acquire), or from the `FREE` `free_if_detached` swapped in (AcqRel). So
// every access to it happens after the one before, never alongside it.
unsafe impl Sync for RingSlot {}

impl RingSlot {
    /// The ring's counters.
    pub fn gauge(&self) -> &Gauge {
        &self.gauge
    }

    pub fn owner(&self) -> u32 {
        self.owner.load(Ordering::Acquire)
    }

    pub fn meta(&self) -> ThreadMeta {
        lock(&self.meta).clone()
    }

    pub fn update_meta(&self, f: impl FnOnce(&mut ThreadMeta)) {
        f(&mut lock(&self.meta))
    }

    /// The ring's consumer, until the lease is dropped; `None` while another lease holds it.
    pub fn lend_consumer(self: &Arc<RingSlot>) -> Option<Lease> {
        let consumer = lock(&self.consumer).take()?;
        Some(Lease {
            slot: self.clone(),
            consumer: Some(consumer),
        })
    }
}

/// A ring's consumer, lent to the drainer (or to `init`, to skip what earlier sessions left);
/// given back to its slot when dropped.
pub struct Lease {
    slot: Arc<RingSlot>,
    /// `Some` until the lease is dropped.
    consumer: Option<Consumer>,
}

impl Lease {
    /// Releases every record published so far unread; returns how many.
    pub fn skip_published(&mut self) -> u64 {
        self.consumer_mut().skip_published()
    }

    fn consumer_mut(&mut self) -> &mut Consumer {
        self.consumer
            .as_mut()
            .expect("a live lease holds its consumer")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(c) = self.consumer.take() {
            *lock(&self.slot.consumer) = Some(c);
        }
    }
}

/// One drain of a ring, by the holder of its consumer: the state is loaded before what is
/// pending, so a ring whose owner had exited is drained to its final tail. [`Visit::end`]
/// then frees it.
#[must_use = "a detached ring is freed only by `end`"]
pub struct Visit<'a> {
    registry: &'a Registry,
    slot: &'a RingSlot,
    consumer: &'a mut Consumer,
    detached: bool,
    pending: u64,
}

impl<'a> Visit<'a> {
    pub fn slot(&self) -> &'a RingSlot {
        self.slot
    }

    /// Records published when the visit began.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// See [`Consumer::drain_into`].
    pub fn drain_into(&mut self, out: &mut Vec<Record>, max: usize) -> u64 {
        self.consumer.drain_into(out, max)
    }

    /// Frees the ring if its owner had exited when the visit began (its records are all read
    /// once what was pending is); returns whether it did. The caller drains what was pending
    /// first.
    pub fn end(self) -> bool {
        if self.detached {
            self.slot.state.store(FREE, Ordering::Release);
            self.registry.detached_now.fetch_sub(1, Ordering::Relaxed);
        }
        self.detached
    }
}

/// What a claim gives the calling thread.
pub struct Claim {
    pub slot: Arc<RingSlot>,
    /// The number of this tenure.
    pub owner: u32,
    pub producer: Producer,
}

/// Every ring made so far, and the drainer that frees them.
pub struct Registry {
    slots: Mutex<Vec<Arc<RingSlot>>>,
    count: AtomicUsize,
    /// Set while a drainer runs. Without one, nobody would move a detached ring back to `FREE`,
    /// so a claim may take it directly: what it still holds was written outside any session.
    drainer_live: AtomicBool,
    /// The live drainer's thread. A thread that exits wakes it, so that its ring is drained and
    /// freed before the next new thread looks for one: a burst of short-lived threads then
    /// reuses a few rings instead of each making its own.
    drainer: Mutex<Option<std::thread::Thread>>,
    /// Rings whose threads have exited and that the drainer has not freed yet.
    detached_now: AtomicUsize,
}

/// The process's registry: made on first use, and made again on first use in a forked child,
/// where the parent's is left as it is, rings, locks and all (see `fork::PerProcess`).
pub fn global() -> &'static Registry {
    GLOBAL.get(Registry::new, forget_in_child)
}

static GLOBAL: crate::fork::PerProcess<Registry> = crate::fork::PerProcess::new();

/// In a forked child, right after the fork: its first use makes a registry of its own.
extern "C" fn forget_in_child() {
    GLOBAL.forget();
}

/// How long a new thread's first traced call waits for the drainer to free an exited thread's
/// ring before it makes a ring of its own.
const CLAIM_WAIT: Duration = Duration::from_millis(2);

impl Default for Registry {
    fn default() -> Registry {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            slots: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            drainer_live: AtomicBool::new(false),
            drainer: Mutex::new(None),
            detached_now: AtomicUsize::new(0),
        }
    }

    /// Gives the calling thread a ring (a free one of the right size, else a new one), its
    /// producer and the owner number of its tenure.
    ///
    /// A burst of short-lived threads can outrun the drainer, which frees an exited thread's ring
    /// once it has read it; each thread starting meanwhile would make a new ring (512 KiB at the
    /// default size) that then stays. So when no ring is free but some await the drainer, the
    /// thread wakes the drainer and waits for one, at most `CLAIM_WAIT`, once, at its first
    /// traced call.
    pub fn claim(&self, capacity: usize) -> Claim {
        let cap = capacity.max(2).next_power_of_two() as u64;
        let mut reusable = self.take_free(&lock(&self.slots), cap);
        if reusable.is_none()
            && self.drainer_live.load(Ordering::Acquire)
            && self.detached_now.load(Ordering::Relaxed) > 0
        {
            self.wake_drainer();
            let until = Instant::now() + CLAIM_WAIT;
            while reusable.is_none() {
                pause();
                reusable = self.take_free(&lock(&self.slots), cap);
                // Under loom one retry: the model explores the drainer's steps, not a clock.
                if cfg!(slicetrace_loom) || Instant::now() >= until {
                    break;
                }
            }
        }
        let mut slots = lock(&self.slots);
        let (slot, mut producer) = match reusable.or_else(|| self.take_free(&slots, cap)) {
            Some(slot) => {
                // SAFETY: `take_free` moved the state to `OWNED` with Acquire, which orders this
                // read after the last owner's write of `parked` (see `RingSlot`'s `Sync`); no
                // other thread touches `parked` until this one detaches.
                let parked = slot.parked.with_mut(|p| unsafe { (*p).take() });
                let producer = parked.expect("a ring no thread owns holds its producer");
                (slot, producer)
            }
            None => {
                let (producer, consumer) = ring(capacity);
                let slot = Arc::new(RingSlot {
                    index: slots.len() as u32,
                    gauge: producer.gauge(),
                    state: AtomicU32::new(OWNED),
                    owner: AtomicU32::new(0),
                    meta: Mutex::new(ThreadMeta::default()),
                    parked: SlotCell::new(None),
                    consumer: Mutex::new(Some(consumer)),
                });
                slots.push(slot.clone());
                self.count.store(slots.len(), Ordering::Release);
                (slot, producer)
            }
        };
        *lock(&slot.meta) = ThreadMeta::current();
        let owner = slot.owner.fetch_add(1, Ordering::AcqRel) + 1;
        producer.begin_tenure();
        Claim {
            slot,
            owner,
            producer,
        }
    }

    /// A free ring of capacity `cap` (or, with no drainer running, a detached one), now owned.
    fn take_free(&self, slots: &[Arc<RingSlot>], cap: u64) -> Option<Arc<RingSlot>> {
        let no_drainer = !self.drainer_live.load(Ordering::Acquire);
        let cas = |s: &RingSlot, from: u32| {
            s.state
                .compare_exchange(from, OWNED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        };
        slots
            .iter()
            .find(|s| {
                s.gauge.capacity() == cap
                    && (cas(s, FREE)
                        || (no_drainer && cas(s, DETACHED) && {
                            self.detached_now.fetch_sub(1, Ordering::Relaxed);
                            true
                        }))
            })
            .cloned()
    }

    /// Gives the ring back, by its owner as it exits, after its last push.
    pub fn detach(&self, slot: &RingSlot, producer: Producer) {
        assert!(
            producer.feeds(&slot.gauge),
            "a producer goes back to its own ring"
        );
        // SAFETY: the calling thread owns the ring (`OWNED`, and it holds the producer), so no
        // other thread touches `parked` until it has seen the `DETACHED` stored below.
        slot.parked.with_mut(|p| unsafe { *p = Some(producer) });
        self.detached_now.fetch_add(1, Ordering::Relaxed);
        slot.state.store(DETACHED, Ordering::Release);
        self.wake_drainer();
    }

    /// Begins a drain of the ring `lease` holds.
    pub fn visit<'a>(&'a self, lease: &'a mut Lease) -> Visit<'a> {
        let Lease { slot, consumer } = lease;
        let consumer = consumer.as_mut().expect("a live lease holds its consumer");
        // Loaded before the tail: a detached ring's final tail was stored before its state.
        let detached = slot.state.load(Ordering::Acquire) == DETACHED;
        let pending = consumer.pending();
        Visit {
            registry: self,
            slot,
            consumer,
            detached,
            pending,
        }
    }

    /// Frees a detached ring when no drainer runs; a compare-and-swap, since a thread starting
    /// at the same moment may take the detached ring itself.
    pub fn free_if_detached(&self, slot: &RingSlot) {
        if slot
            .state
            .compare_exchange(DETACHED, FREE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.detached_now.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Says whether a drainer runs.
    pub fn set_drainer_live(&self, live: bool) {
        self.drainer_live.store(live, Ordering::Release);
    }

    /// The thread exiting owners wake, or none.
    pub fn set_drainer_thread(&self, t: Option<std::thread::Thread>) {
        *lock(&self.drainer) = t;
    }

    fn wake_drainer(&self) {
        // Never waits: a thread exiting while the session starts or stops just does not wake it.
        if let Ok(t) = self.drainer.try_lock() {
            if let Some(t) = t.as_ref() {
                t.unpark();
            }
        }
    }

    /// Number of rings made so far; the drainer re-reads the list when it grows.
    pub fn ring_count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// A copy of the list of rings.
    pub fn snapshot(&self, out: &mut Vec<Arc<RingSlot>>) {
        let slots = lock(&self.slots);
        out.clear();
        out.extend(slots.iter().cloned());
    }
}

#[cfg(all(test, not(slicetrace_loom)))]
mod tests {
    use super::*;
    use crate::wire::ring::test_record as rec;

    fn drain(reg: &Registry, lease: &mut Lease) -> (Vec<u64>, bool) {
        let mut v = reg.visit(lease);
        let mut out = Vec::new();
        let n = v.pending() as usize;
        v.drain_into(&mut out, n);
        (out.iter().map(|r| r.value).collect(), v.end())
    }

    #[test]
    fn the_producer_passes_to_the_next_owner_after_the_drain() {
        let reg = Registry::new();
        reg.set_drainer_live(true);
        let mut first = reg.claim(4);
        assert_eq!((first.slot.index, first.owner), (0, 1));
        let mut lease = first.slot.lend_consumer().unwrap();
        assert!(first.producer.push(rec(11)));
        assert!(first.producer.push(rec(12)));
        reg.detach(&first.slot, first.producer);
        // Detached, not drained: a new thread gets a ring of its own.
        let mut other = reg.claim(4);
        assert_eq!(other.slot.index, 1);
        assert_eq!(drain(&reg, &mut lease), (vec![11, 12], true));
        // Freed: the next claim takes the ring, and its producer goes on from the tail.
        let mut second = reg.claim(4);
        assert_eq!((second.slot.index, second.owner), (0, 2));
        assert_eq!(second.producer.tail(), 2);
        assert_eq!(second.producer.history_start(), 2);
        assert!(second.producer.push(rec(21)));
        assert_eq!(drain(&reg, &mut lease), (vec![21], false));
        // An owned ring stays owned after a visit.
        assert_eq!(drain(&reg, &mut lease), (vec![], false));
        assert!(other.producer.push(rec(31)));
        assert_eq!(reg.ring_count(), 2);
    }

    #[test]
    fn without_a_drainer_a_claim_takes_a_detached_ring() {
        let reg = Registry::new();
        let mut first = reg.claim(8);
        first.producer.push(rec(1));
        reg.detach(&first.slot, first.producer);
        let second = reg.claim(8);
        assert_eq!((second.slot.index, second.owner), (0, 2));
        assert_eq!(second.producer.owner_start(), 1);
        // Its leftover record is still there for whoever drains it.
        let mut lease = second.slot.lend_consumer().unwrap();
        assert_eq!(drain(&reg, &mut lease), (vec![1], false));
    }

    #[test]
    fn rings_of_another_size_are_not_reused() {
        let reg = Registry::new();
        let first = reg.claim(8);
        reg.detach(&first.slot, first.producer);
        let other = reg.claim(16);
        assert_eq!(other.slot.index, 1);
        assert_eq!(other.slot.gauge().capacity(), 16);
        assert_eq!(reg.claim(5).slot.index, 0, "5 rounds up to 8");
    }

    #[test]
    fn a_detached_ring_is_freed_without_a_drainer_once() {
        let reg = Registry::new();
        let first = reg.claim(4);
        let slot = first.slot.clone();
        reg.detach(&first.slot, first.producer);
        assert_eq!(reg.detached_now.load(Ordering::Relaxed), 1);
        reg.free_if_detached(&slot);
        reg.free_if_detached(&slot);
        assert_eq!(reg.detached_now.load(Ordering::Relaxed), 0);
        reg.set_drainer_live(true);
        assert_eq!(reg.claim(4).slot.index, 0);
        // Owned now: nothing to free.
        reg.free_if_detached(&slot);
        assert_eq!(slot.state.load(Ordering::Relaxed), OWNED);
    }

    #[test]
    fn one_consumer_lent_at_a_time_and_given_back() {
        let reg = Registry::new();
        let mut c = reg.claim(4);
        let mut lease = c.slot.lend_consumer().unwrap();
        assert!(c.slot.lend_consumer().is_none());
        c.producer.push_all(&[rec(1), rec(2)]);
        assert_eq!(lease.skip_published(), 2);
        drop(lease);
        let mut again = c.slot.lend_consumer().unwrap();
        assert_eq!(again.skip_published(), 0);
        c.producer.push(rec(3));
        assert_eq!(drain(&reg, &mut again), (vec![3], false));
    }

    #[test]
    #[should_panic(expected = "its own ring")]
    fn a_producer_cannot_go_back_to_another_ring() {
        let reg = Registry::new();
        let a = reg.claim(4);
        let b = reg.claim(4);
        reg.detach(&a.slot, b.producer);
    }

    #[test]
    fn claims_from_many_threads_get_distinct_rings() {
        let reg = Arc::new(Registry::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    let c = reg.claim(4);
                    let index = c.slot.index;
                    // Not detached: no ring becomes free for another thread to reuse.
                    (index, c)
                })
            })
            .collect();
        let mut claims: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        claims.sort_by_key(|c| c.0);
        assert_eq!(claims.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }
}
