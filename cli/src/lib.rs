//! The `slicetrace` command's parts: readers of trace files, the summary, the waterfall.

pub mod input;
pub mod stats;
pub mod summary;
#[doc(hidden)]
pub mod synthetic;
pub mod waterfall;

use input::{read_spans, InputError, ReadReport};
use slicetrace::trace_event::model::{ProcessKey, Span};
use slicetrace::trace_event::writer::{Limits, TraceEventWriter, WriterStats};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Spans handed from the reading thread to the writing one, grouped by process.
type Batch = Vec<(ProcessKey, Vec<Span>)>;

const BATCH_SPANS: usize = 4096;

/// Converts `inputs` to one trace-event file written to `out`. Returns whether any input line
/// was skipped, and what the writer did. Parsing runs on a thread of its own, a bounded
/// number of batches ahead of the writer.
pub fn convert<W: Write>(
    inputs: &[PathBuf],
    out: W,
    limits: Limits,
) -> Result<(bool, WriterStats), String> {
    let mut w = TraceEventWriter::new(out, limits).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(8);
    // Emptied span vectors go back to the reading thread to be filled again: a batch is too
    // big for the allocator's small pages, and fresh memory for each one cost page faults on
    // both threads.
    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<Vec<Span>>(16);
    let reader = std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("convert-read".into())
            .spawn_scoped(scope, move || {
                let mut batch: Batch = Vec::new();
                let mut n = 0;
                let r = read_all(inputs, &mut |p, s| {
                    match batch.last_mut() {
                        Some((last, spans)) if last == p => spans.push(s),
                        _ => {
                            let mut spans = spare_rx.try_recv().unwrap_or_default();
                            spans.push(s);
                            batch.push((p.clone(), spans));
                        }
                    }
                    n += 1;
                    if n >= BATCH_SPANS {
                        n = 0;
                        // The writer stopped: nothing more to read for.
                        tx.send(std::mem::take(&mut batch)).map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "writer stopped")
                        })?;
                    }
                    Ok(())
                });
                if !batch.is_empty() {
                    let _ = tx.send(batch);
                }
                r
            });
        let reader = match reader {
            Ok(r) => r,
            Err(e) => return (Err(format!("cannot start the reading thread: {e}")), Ok(())),
        };
        let mut written = Ok(());
        'batches: for batch in rx {
            for (p, mut spans) in batch {
                written = w.push_all(&p, &mut spans);
                if written.is_err() {
                    break 'batches;
                }
                // Freed here when the reading thread has enough, or has finished.
                let _ = spare_tx.try_send(spans);
            }
        }
        (Ok(reader.join()), written)
    });
    let (read, written) = reader;
    written.map_err(|e| format!("writing the output: {e}"))?;
    let skipped = read?
        .map_err(|_| "the reading thread panicked".to_owned())?
        .map_err(|e| e.to_string())?;
    let (mut out, stats) = w.finish().map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    Ok((skipped, stats))
}

/// Reads every input, handing spans to `each`; reports skipped lines on stderr.
/// Returns whether any line was skipped.
pub fn read_all(
    inputs: &[PathBuf],
    each: &mut dyn FnMut(&ProcessKey, Span) -> std::io::Result<()>,
) -> Result<bool, InputError> {
    let mut skipped_any = false;
    for path in inputs {
        let report = read_spans(path, each)?;
        skipped_any |= report.skipped_count > 0;
        report_skips(path, &report);
    }
    Ok(skipped_any)
}

fn report_skips(path: &Path, r: &ReadReport) {
    for s in &r.skipped {
        eprintln!("{}: line {}: skipped: {}", path.display(), s.line, s.why);
    }
    let unlisted = r.skipped_count - r.skipped.len() as u64;
    if unlisted > 0 {
        eprintln!("{}: {unlisted} more lines skipped", path.display());
    }
    if r.skipped_count > 0 {
        eprintln!(
            "{}: read {} spans from {} lines ({}); skipped {} lines",
            path.display(),
            r.spans,
            r.lines,
            r.format,
            r.skipped_count
        );
    }
}
