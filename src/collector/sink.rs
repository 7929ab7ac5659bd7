//! Where finished spans go: any `opentelemetry_sdk` `SpanExporter`, called from the drainer.

use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

/// The object-safe face of a `SpanExporter`, so `Config` can hold any of them. Implemented for
/// every `SpanExporter`; batches are handed over by value, never copied.
pub trait Sink: Send {
    fn export(&mut self, batch: Vec<SpanData>) -> Result<(), String>;
    fn set_resource(&mut self, resource: &Resource);
    fn shutdown(&mut self, timeout: Duration) -> Result<(), String>;

    /// Hands one batch (of at most the configured batch size) over for export, and returns
    /// the outcomes of batches that finished meanwhile. The default exports it here and now,
    /// so its own outcome comes back; a sink with several connections keeps a batch in flight
    /// on each and waits only while all of them are busy.
    fn submit(&mut self, batch: Vec<SpanData>) -> Vec<Outcome> {
        let n = batch.len() as u64;
        vec![(n, self.export(batch))]
    }

    /// Waits for every batch still in flight, and returns their outcomes.
    fn settle(&mut self) -> Vec<Outcome> {
        Vec::new()
    }

    /// Returns the outcomes of batches that finished since the last call, without waiting:
    /// the export thread asks while it has nothing to submit, so the counters follow the
    /// collector's answers even when no more spans come.
    fn poll(&mut self) -> Vec<Outcome> {
        Vec::new()
    }
}

/// A batch's span count and how its export ended.
pub type Outcome = (u64, Result<(), String>);

impl<E: SpanExporter + 'static> Sink for E {
    fn export(&mut self, batch: Vec<SpanData>) -> Result<(), String> {
        block_on(SpanExporter::export(self, batch)).map_err(|e| e.to_string())
    }

    fn set_resource(&mut self, resource: &Resource) {
        SpanExporter::set_resource(self, resource)
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<(), String> {
        self.shutdown_with_timeout(timeout)
            .map_err(|e| e.to_string())
    }
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on the drainer thread, parking between polls.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}
