//! Slices that belong to a request rather than to a thread, for async code whose work moves
//! between worker threads at each `.await`: [`AsyncSlice`], a handle that carries its own span
//! id and ends on drop from whichever thread holds it; [`InSlice`], which records one over a
//! future's whole life; and [`SliceGuard`], the scoped form of a thread-bound slice.
//!
//! An async slice's records go into the ring of the thread that writes each of them, like every
//! other record: its start names no span id, which the drainer derives from the start record's
//! position (as it does for every span), and the handle derives the same id to name in its
//! later records. Whether a slice is recorded is decided once, at its start (tracing on, the
//! request sampled, its name's level at or below the process level), and the handle remembers
//! it: a level change while it is open never splits it.

use super::api::{slice_end, slice_end_with, slice_start, stamp, Gather};
use super::handle::{admits, enabled, with_local, Local};
use crate::args::{Attr, End, Opts};
use crate::ids::{derive_span_id, Rid, Salt};
use crate::level;
use crate::name::Name;
use crate::wire::record::{flag, Kind, Record};
use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// The innermost async slice entered on this thread (being polled, or [`AsyncSlice::enter`]
    /// held): its request and span id. Constant-initialised with nothing to drop.
    static CURRENT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The parent a new async slice of `rid` takes: the entered one, if it is of the same request.
#[inline(always)]
pub(crate) fn entered_for(rid: Rid) -> u64 {
    CURRENT
        .try_with(|c| {
            let (r, id) = c.get();
            if r == rid.0 {
                id
            } else {
                0
            }
        })
        .unwrap_or(0)
}

/// Makes `(rid, id)` the entered slice until dropped, then puts back the one before.
struct Scope {
    prev: Option<(u64, u64)>,
}

impl Scope {
    #[inline(always)]
    fn enter(rid: Rid, id: u64) -> Scope {
        if id == 0 {
            return Scope { prev: None };
        }
        Scope {
            prev: CURRENT.try_with(|c| c.replace((rid.0, id))).ok(),
        }
    }
}

impl Drop for Scope {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(prev) = self.prev {
            let _ = CURRENT.try_with(|c| c.set(prev));
        }
    }
}

/// A slice of a request's work that is not tied to a thread: started on one, it may be ended,
/// given attributes or events on any other. It is `Send`, and ends when dropped.
///
/// In the tree it hangs under the async slice entered where it started (polled by
/// [`InSlice`], or held by [`AsyncSlice::enter`]) if that is of the same request, else under
/// the request's span, not under a thread span: its thread changes under it. It carries the
/// `thread.id` of the thread it started on, where a trace-event viewer draws it (in an overlap
/// lane when other work of that thread runs meanwhile), and
/// `slicetrace.end_thread.id` when it ended on another.
///
/// A handle whose start was not recorded (tracing off, the request sampled out, the name above
/// the level, or a full ring, counted as dropped) records nothing more.
#[must_use = "an async slice ends when it is dropped: bind it to a name"]
#[derive(Debug)]
pub struct AsyncSlice {
    rid: Rid,
    /// 0: not recorded.
    id: u64,
    name: &'static Name,
}

impl AsyncSlice {
    /// Opens an async slice of `rid` now.
    #[inline]
    pub fn start(name: &'static Name, rid: Rid) -> AsyncSlice {
        AsyncSlice::open(name, rid, None)
    }

    /// A start with one record: under `parent`, else the entered slice.
    #[inline(always)]
    fn open(name: &'static Name, rid: Rid, parent: Option<u64>) -> AsyncSlice {
        let mut s = AsyncSlice { rid, id: 0, name };
        if admits(rid) && level::records(name.level()) {
            let parent = parent.unwrap_or_else(|| entered_for(rid));
            s.id = with_local(|l| {
                let head = task_record(l, Kind::TaskStart, rid, name, parent, 0, None);
                let pos = l.producer.tail();
                l.producer.push(head).then(|| task_id(l, pos))
            })
            .flatten()
            .unwrap_or(0);
        }
        s
    }

    /// [`AsyncSlice::start`] at a given time, with attributes.
    pub fn start_with(name: &'static Name, rid: Rid, opts: Opts<'_>) -> AsyncSlice {
        AsyncSlice::start_under(name, rid, None, opts)
    }

    /// [`AsyncSlice::start_with`] under the async slice `parent` (its span id; 0 for the
    /// request's span), or with `None` under the entered one.
    pub(crate) fn start_under(
        name: &'static Name,
        rid: Rid,
        parent: Option<u64>,
        opts: Opts<'_>,
    ) -> AsyncSlice {
        if opts.attrs.is_empty() && opts.ts.is_none() {
            return AsyncSlice::open(name, rid, parent);
        }
        let mut s = AsyncSlice { rid, id: 0, name };
        if admits(rid) && level::records(name.level()) {
            let parent = parent.unwrap_or_else(|| entered_for(rid));
            s.id = with_local(|l| {
                let head = task_record(l, Kind::TaskStart, rid, name, parent, 0, opts.ts);
                let mut g = Gather::new();
                g.add_attrs(l, rid, flag::TASK, opts.attrs);
                g.add(l, head, &[]);
                let pos = l.producer.tail() + g.len() as u64 - 1;
                g.flush(l).then(|| task_id(l, pos))
            })
            .flatten()
            .unwrap_or(0);
        }
        s
    }

    /// Ends the slice now (as dropping it does).
    pub fn end(self) {}

    /// Ends the slice at a given time, with attributes.
    pub fn end_with(mut self, opts: Opts<'_>) {
        self.finish(0, opts);
    }

    fn finish(&mut self, flags: u8, opts: Opts<'_>) {
        let id = std::mem::take(&mut self.id);
        if id == 0 || !enabled() {
            return;
        }
        let (rid, name) = (self.rid, self.name);
        with_local(|l| {
            let head = task_record(l, Kind::TaskEnd, rid, name, id, flags, opts.ts);
            if opts.attrs.is_empty() {
                l.producer.push(head);
            } else {
                let mut g = Gather::new();
                g.add_attrs(l, rid, flag::TASK, opts.attrs);
                g.add(l, head, &[]);
                g.flush(l);
            }
        });
    }

    /// Attributes on the slice.
    pub fn add_attrs(&self, attrs: &[Attr<'_>]) {
        if self.id == 0 || attrs.is_empty() || !enabled() {
            return;
        }
        let (rid, id) = (self.rid, self.id);
        with_local(|l| {
            let mut g = Gather::new();
            g.add_attrs(l, rid, flag::TASK, attrs);
            let head = Record {
                rid: rid.0,
                value: id,
                kind: Kind::TaskAttrs as u8,
                ..Record::default()
            };
            g.add(l, head, &[]);
            g.flush(l);
        });
    }

    /// An event on the slice, now.
    pub fn event(&self, name: &'static Name) {
        self.event_with(name, Opts::default())
    }

    /// An event on the slice, at a given time, with attributes. Not recorded when its name is
    /// above the process level.
    pub fn event_with(&self, name: &'static Name, opts: Opts<'_>) {
        event_on(self.rid, self.id, name, opts)
    }

    /// The slice's span id, if its start was recorded.
    pub fn span_id(&self) -> Option<u64> {
        (self.id != 0).then_some(self.id)
    }

    /// `request` (the request's context, from [`propagate_context`](crate::propagate_context)
    /// on the thread that started or joined it) with this slice as the parent: what to send
    /// downstream so that a receiver's spans hang under this slice. `request` itself when the
    /// slice was not recorded.
    pub fn context(&self, request: &crate::PropagateContext) -> crate::PropagateContext {
        match self.id {
            0 => *request,
            id => request.with_parent(id),
        }
    }

    /// The request the slice is of.
    pub fn rid(&self) -> Rid {
        self.rid
    }

    /// Makes this the entered slice on this thread while the returned value lives: async
    /// slices of the same request started meanwhile nest under it. [`InSlice`] does this around
    /// each poll; use it for code that starts slices outside such a future.
    pub fn enter(&self) -> Entered<'_> {
        Entered {
            _scope: Scope::enter(self.rid, self.id),
            _slice: PhantomData,
        }
    }
}

/// An event on the async slice `id` of `rid` (nothing for 0, a slice not recorded).
pub(crate) fn event_on(rid: Rid, id: u64, name: &'static Name, opts: Opts<'_>) {
    if id == 0 || !enabled() || !level::records(name.level()) {
        return;
    }
    with_local(|l| {
        let head = task_record(l, Kind::Event, rid, name, id, flag::FOR_TASK, opts.ts);
        let mut g = Gather::new();
        g.add(l, head, &[]);
        g.add_attrs(l, rid, flag::TASK | flag::TARGET_EVENT, opts.attrs);
        g.flush(l);
    });
}

/// Makes the async slice `id` of `rid` the entered one on this thread; returns the one before,
/// for [`restore`]. For entries and exits that are not one scope (a `tracing` span's).
#[cfg(feature = "tracing")]
pub(crate) fn enter_raw(rid: Rid, id: u64) -> (u64, u64) {
    CURRENT
        .try_with(|c| c.replace((rid.0, id)))
        .unwrap_or((0, 0))
}

/// The entered slice on this thread: its request and span id.
#[cfg(feature = "tracing")]
pub(crate) fn current_entered() -> (u64, u64) {
    CURRENT.try_with(|c| c.get()).unwrap_or((0, 0))
}

/// Puts back the entered slice [`enter_raw`] returned.
#[cfg(feature = "tracing")]
pub(crate) fn restore(prev: (u64, u64)) {
    let _ = CURRENT.try_with(|c| c.set(prev));
}

impl Drop for AsyncSlice {
    fn drop(&mut self) {
        self.finish(0, Opts::default());
    }
}

/// While it lives, its [`AsyncSlice`] is the entered one on this thread (see
/// [`AsyncSlice::enter`]). Not `Send`: it is undone on the thread that made it.
#[must_use = "the slice is entered only while this lives"]
pub struct Entered<'a> {
    _scope: Scope,
    _slice: PhantomData<(&'a AsyncSlice, *const ())>,
}

#[inline(always)]
fn task_record(
    l: &Local,
    kind: Kind,
    rid: Rid,
    name: &'static Name,
    value: u64,
    flags: u8,
    ts: Option<crate::args::UnixNanos>,
) -> Record {
    let (ts, tf) = stamp(l, ts);
    Record {
        ts,
        rid: rid.0,
        value,
        name: name.id(),
        kind: kind as u8,
        flags: flags | tf,
        len: 0,
    }
}

/// The span id of the async slice whose start record this thread wrote at `pos`.
#[inline(always)]
fn task_id(l: &Local, pos: u64) -> u64 {
    derive_span_id(l.seed, pos, Salt::TASK)
}

pin_project_lite::pin_project! {
    /// A future recorded as an async slice over its life: see [`InSlice`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Traced<F> {
        // `None` once the future has completed (dropped then, inside its slice).
        #[pin]
        fut: Option<F>,
        slice: Option<AsyncSlice>,
    }

    impl<F> PinnedDrop for Traced<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if let Some(slice) = this.slice.take() {
                // Dropped before it completed: the future goes first (in place, as pinning
                // asks), inside its slice, so that slices it holds end before this one.
                let scope = Scope::enter(slice.rid, slice.id);
                this.fut.set(None);
                drop(scope);
                let mut slice = slice;
                slice.finish(flag::CANCELLED, Opts::default());
            }
        }
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    /// Polls the future with its slice entered. Polled again after it completed, it stays
    /// pending, as a fused future does.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        let (rid, id) = this.slice.as_ref().map_or((Rid(0), 0), |s| (s.rid, s.id));
        let scope = Scope::enter(rid, id);
        let out = match fut.poll(cx) {
            Poll::Ready(out) => out,
            Poll::Pending => return Poll::Pending,
        };
        this.fut.set(None);
        drop(scope);
        drop(this.slice.take());
        Poll::Ready(out)
    }
}

/// Records a future as an async slice of a request: from the call until the future completes
/// (or is dropped, marked `slicetrace.cancelled`), whichever threads poll it. Slices started
/// while it is polled, by nested futures or [`AsyncSlice::start`], hang under it.
///
/// ```
/// use slicetrace::{name, InSlice, Rid};
/// async fn route(rid: Rid) -> u32 {
///     async { 7 }.in_slice(name!("pick_worker"), rid).await
/// }
/// ```
pub trait InSlice: Future + Sized {
    /// This future inside a new async slice `name` of `rid`, started now.
    fn in_slice(self, name: &'static Name, rid: Rid) -> Traced<Self> {
        self.in_async_slice(AsyncSlice::start(name, rid))
    }

    /// This future inside `slice`, which it ends when it completes.
    fn in_async_slice(self, slice: AsyncSlice) -> Traced<Self> {
        Traced {
            fut: Some(self),
            slice: Some(slice),
        }
    }
}

impl<F: Future> InSlice for F {}

/// A thread-bound slice that ends when it goes out of scope, so that an early return (`?`)
/// never leaves it open. Not `Send`: its end must come on the thread of its start.
#[must_use = "the slice ends when the guard is dropped: bind it to a name"]
#[derive(Debug)]
pub struct SliceGuard {
    name: &'static Name,
    rid: Rid,
    open: bool,
    _thread_bound: PhantomData<*const ()>,
}

/// Opens a thread-bound slice as [`slice_start`](crate::slice_start) does, ended by the guard
/// (as a plain `slice_end`) unless ended before.
#[inline]
pub fn slice(name: &'static Name, rid: Rid) -> SliceGuard {
    slice_start(name, rid);
    SliceGuard {
        name,
        rid,
        open: true,
        _thread_bound: PhantomData,
    }
}

impl SliceGuard {
    /// Ends the slice now, with `end`'s options.
    pub fn end(mut self, end: End) {
        self.open = false;
        slice_end(self.name, self.rid, end);
    }

    /// Ends the slice with a timestamp and attributes.
    pub fn end_with(mut self, end: End, opts: Opts<'_>) {
        self.open = false;
        slice_end_with(self.name, self.rid, end, opts);
    }
}

impl Drop for SliceGuard {
    #[inline]
    fn drop(&mut self) {
        if self.open {
            slice_end(self.name, self.rid, End::PLAIN);
        }
    }
}
