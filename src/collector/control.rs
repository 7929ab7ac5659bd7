//! What the session guard and the background threads share: the stop switch, flush requests and
//! their completion, and the loss counters.

use super::stats::Counters;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Shared by the session guard, the drainer and the export thread.
#[derive(Default)]
pub struct Control {
    pub stop: AtomicBool,
    pub flush_requested: AtomicU64,
    flush_done: Mutex<u64>,
    flushed: Condvar,
    pub counters: Counters,
}

impl Control {
    /// Asks for a flush and waits for it, up to `timeout`. False on time-out.
    pub fn flush(&self, drainer: &std::thread::Thread, timeout: Duration) -> bool {
        let want = self.flush_requested.fetch_add(1, Ordering::AcqRel) + 1;
        drainer.unpark();
        let done = self.flush_done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = self
            .flushed
            .wait_timeout_while(done, timeout, |d| *d < want)
            .unwrap_or_else(|e| e.into_inner());
        *done >= want
    }

    pub fn mark_flushed(&self, upto: u64) {
        let mut done = self.flush_done.lock().unwrap_or_else(|e| e.into_inner());
        if *done < upto {
            *done = upto;
        }
        self.flushed.notify_all();
    }
}
