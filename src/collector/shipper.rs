//! The export thread: takes finished batches from the drainer through a bounded queue and hands
//! them to the sink, so a slow or unreachable destination never stalls the drainer. When the
//! queue is full the batch is dropped and its spans counted (`spans_dropped_export`).

use super::drainer::Control;
use super::sink::Sink;
use super::stats::Counters;
use opentelemetry_sdk::trace::SpanData;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

enum Msg {
    Batch(Vec<SpanData>),
    /// Everything queued before has been handed to the sink: flush number `n` is done.
    Flush(u64),
    Stop,
}

pub struct Shipper {
    tx: SyncSender<Msg>,
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
        shutdown_timeout: Duration,
    ) -> std::io::Result<Shipper> {
        let (tx, rx) = sync_channel(queue_batches.max(1));
        let c = ctl.clone();
        let give_up_at = Arc::new(OnceLock::<Instant>::new());
        let deadline = give_up_at.clone();
        let join = std::thread::Builder::new()
            .name("slicetrace-export".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Batch(batch) => {
                            let n = batch.len() as u64;
                            if deadline.get().is_some_and(|d| Instant::now() >= *d) {
                                Counters::add(&c.counters.spans_dropped_export, n);
                                continue;
                            }
                            match sink.export(batch) {
                                Ok(()) => Counters::add(&c.counters.spans_exported, n),
                                Err(_) => {
                                    Counters::add(&c.counters.export_errors, 1);
                                    Counters::add(&c.counters.spans_export_failed, n);
                                }
                            }
                        }
                        Msg::Flush(n) => c.mark_flushed(n),
                        Msg::Stop => {
                            if sink.shutdown(shutdown_timeout).is_err() {
                                Counters::add(&c.counters.export_errors, 1);
                            }
                            return;
                        }
                    }
                }
            })?;
        Ok(Shipper {
            tx,
            join: Some(join),
            ctl,
            give_up_at,
            shutdown_timeout,
        })
    }

    /// Queues a batch, or drops and counts it when the queue is full.
    pub fn send(&self, batch: Vec<SpanData>) {
        let n = batch.len() as u64;
        match self.tx.try_send(Msg::Batch(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                Counters::add(&self.ctl.counters.spans_dropped_export, n);
            }
        }
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
