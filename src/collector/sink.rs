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

    /// How many batches [`Sink::export_many`] can have in flight at once.
    fn lanes(&self) -> usize {
        1
    }

    /// Exports up to [`Sink::lanes`] batches, each of at most the configured batch size; one
    /// result per batch, in their order. The default sends them one after another.
    fn export_many(&mut self, batches: Vec<Vec<SpanData>>) -> Vec<Result<(), String>> {
        batches.into_iter().map(|b| self.export(b)).collect()
    }
}

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
