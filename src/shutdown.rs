//! Ending a session from async code: [`Guard::shutdown_async`] joins the drainer on a thread of
//! its own, so that a runtime's worker awaiting it goes on running other tasks.

use crate::collector::stats::Stats;
use crate::session::Guard;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct State {
    stats: Option<Stats>,
    waker: Option<Waker>,
}

/// The future [`Guard::shutdown_async`] returns: the final counters, once every span recorded
/// before it was called is exported (or `shutdown_timeout` has passed).
#[must_use = "the session ends whether or not this is awaited; await it for the counters"]
pub struct Shutdown {
    state: Arc<Mutex<State>>,
}

impl Guard {
    /// [`Guard::shutdown`] without blocking the calling thread: the drainer is joined on a
    /// thread started for it (should that thread fail to start, here, blocking). For a guard
    /// held inside an async runtime, whose workers must not block; dropping the guard there
    /// blocks the worker until the export ends.
    pub fn shutdown_async(self) -> Shutdown {
        let state = Arc::new(Mutex::new(State::default()));
        let theirs = state.clone();
        let spawned = std::thread::Builder::new()
            .name("slicetrace-shutdown".into())
            .spawn(move || {
                let stats = self.shutdown();
                let mut s = theirs.lock().unwrap_or_else(|e| e.into_inner());
                s.stats = Some(stats);
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            });
        if spawned.is_err() {
            // The closure (and the guard in it) was dropped with the failed spawn, which ended
            // the session on this thread; its counters are the process's now.
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            s.stats = Some(crate::stats());
        }
        Shutdown { state }
    }
}

impl Future for Shutdown {
    type Output = Stats;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Stats> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.stats.take() {
            Some(stats) => Poll::Ready(stats),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
