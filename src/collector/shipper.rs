//! The export thread: takes finished batches from the drainer through a bounded queue and hands
//! them to the sink, so a slow or unreachable destination never stalls the drainer. When the
//! queue is full the batch is dropped and its spans counted (`spans_dropped_export`).

use super::control::Control;
use super::sink::{Outcome, Sink};
use super::span_out::Batch;
use super::stats::Counters;
use opentelemetry::InstrumentationScope;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

enum Msg {
    Batch(Batch),
    /// Everything queued before has been handed to the sink: flush number `n` is done.
    Flush(u64),
    Stop,
}

/// How often an idle export thread takes the answers to batches still in flight.
const POLL_EVERY: Duration = Duration::from_millis(100);

pub struct Shipper {
    tx: SyncSender<Msg>,
    /// Spans queued and not yet exported; the queue's bound is in spans.
    queued: Arc<AtomicUsize>,
    limit: usize,
    join: Option<JoinHandle<()>>,
    ctl: Arc<Control>,
    /// Set when shutdown begins: batches still queued after it are dropped and counted.
    give_up_at: Arc<OnceLock<Instant>>,
    shutdown_timeout: Duration,
}

impl Shipper {
    pub fn start(
        mut sink: Box<dyn Sink>,
        ctl: Arc<Control>,
        queue_batches: usize,
        max_batch: usize,
        shutdown_timeout: Duration,
        scope: InstrumentationScope,
    ) -> std::io::Result<Shipper> {
        let (tx, rx) = sync_channel(queue_batches.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let max_batch = max_batch.max(1);
        let c = ctl.clone();
        let give_up_at = Arc::new(OnceLock::<Instant>::new());
        let deadline = give_up_at.clone();
        let join = std::thread::Builder::new()
            .name("slicetrace-export".into())
            .spawn(move || loop {
                let msg = match rx.recv_timeout(POLL_EVERY) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        count(&c.counters, sink.poll());
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                match msg {
                    Msg::Batch(Batch { spans, rids }) => {
                        let total = spans.len();
                        let mut rest = spans.into_iter();
                        while rest.len() > 0 {
                            if deadline.get().is_some_and(|d| Instant::now() >= *d) {
                                let n = rest.len() as u64;
                                Counters::add(&c.counters.spans_dropped_export, n);
                                break;
                            }
                            let mut b = Vec::with_capacity(rest.len().min(max_batch));
                            for f in rest.by_ref().take(max_batch) {
                                b.push(f.into_span_data(&scope, &rids));
                            }
                            count(&c.counters, sink.submit(b));
                        }
                        q.fetch_sub(total, Ordering::Relaxed);
                    }
                    Msg::Flush(n) => {
                        count(&c.counters, sink.settle());
                        c.mark_flushed(n);
                    }
                    Msg::Stop => {
                        count(&c.counters, sink.settle());
                        if sink.shutdown(shutdown_timeout).is_err() {
                            Counters::add(&c.counters.export_errors, 1);
                        }
                        return;
                    }
                }
            })?;
        Ok(Shipper {
            tx,
            queued,
            limit: queue_batches.max(1) * max_batch,
            join: Some(join),
            ctl,
            give_up_at,
            shutdown_timeout,
        })
    }

    /// Queues spans (the export thread cuts them into batches), or drops and counts them when
    /// the queue already holds its bound of spans.
    pub fn send(&self, batch: Batch) {
        let n = batch.spans.len();
        if self.queued.load(Ordering::Relaxed) + n > self.limit {
            Counters::add(&self.ctl.counters.spans_dropped_export, n as u64);
            return;
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
        match self.tx.try_send(Msg::Batch(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(n, Ordering::Relaxed);
                Counters::add(&self.ctl.counters.spans_dropped_export, n as u64);
            }
        }
    }

    /// Spans the queue can take before it reaches its bound (what is sent past it is dropped).
    pub fn room(&self) -> usize {
        self.limit
            .saturating_sub(self.queued.load(Ordering::Relaxed))
    }

    /// Marks flush `n` done once everything queued so far is exported. Waits for queue room:
    /// only a caller of `flush` waits for this.
    pub fn flush(&self, n: u64) {
        if self.tx.send(Msg::Flush(n)).is_err() {
            self.ctl.mark_flushed(n);
        }
    }

    /// Exports what is queued, within the shutdown timeout (what is left after it is dropped and
    /// counted), shuts the sink down, and ends the thread.
    pub fn stop(mut self) {
        let _ = self.give_up_at.set(Instant::now() + self.shutdown_timeout);
        let _ = self.tx.send(Msg::Stop);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Counts how the sink's batches ended.
fn count(c: &Counters, outcomes: Vec<Outcome>) {
    for (n, result) in outcomes {
        match result {
            Ok(()) => Counters::add(&c.spans_exported, n),
            Err(_) => {
                Counters::add(&c.export_errors, 1);
                Counters::add(&c.spans_export_failed, n);
            }
        }
    }
}
