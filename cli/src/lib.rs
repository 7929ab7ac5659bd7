//! The `slicetrace` command's parts: readers of trace files, the summary, the waterfall.

pub mod allocator;
pub mod input;
pub mod kineto;
pub mod stats;
pub mod summary;
#[doc(hidden)]
pub mod synthetic;
pub mod waterfall;

use input::{read_spans_into, InputError, ReadReport, SpanSink};
use slicetrace_spans::model::{ProcessKey, Span};
use slicetrace_spans::writer::{Limits, TraceEventWriter, WriterStats};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};

/// Spans handed from the reading thread to the writing one, grouped by process.
type Batch = Vec<(ProcessKey, Vec<Span>)>;

const BATCH_SPANS: usize = 4096;
/// The first batch's size; each next one twice the last, up to [`BATCH_SPANS`]. The writer
/// has nothing to do until the first batch comes: a full one is about 4 ms of reading, 2 % of
/// converting 200 000 spans.
const FIRST_BATCH_SPANS: usize = 128;
/// A line's spans go over in the vector they were read into, unless there are fewer than
/// this many: those are added to the batch's last vector, not sent with a process of their own.
const OWN_VECTOR_SPANS: usize = 32;
/// Emptied span vectors on their way back to the reading thread; past this they are freed.
const SPARE_VECTORS: usize = 64;
/// Span vectors with room for more than this are not sent back (spare memory stays small).
const SPARE_ROOM: usize = 1024;

/// The reading thread's end of the hand-over: gathers spans into batches and sends each one
/// when full.
struct Batcher<'a> {
    batch: Batch,
    spans: usize,
    /// Spans that fill the batch being gathered.
    full: usize,
    tx: &'a SyncSender<Batch>,
    spare: &'a Receiver<Vec<Span>>,
}

impl Batcher<'_> {
    fn counted(&mut self, n: usize) -> std::io::Result<()> {
        self.spans += n;
        if self.spans >= self.full {
            self.full = (self.full * 2).min(BATCH_SPANS);
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> std::io::Result<()> {
        self.spans = 0;
        // The writer stopped: nothing more to read for.
        self.tx
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "writer stopped"))
    }

    /// The batch's vector of `p`'s spans to add to: its last one, or a new one.
    fn last_of(&mut self, p: &ProcessKey) -> &mut Vec<Span> {
        if self.batch.last().is_none_or(|(last, _)| last != p) {
            let spans = self.spare.try_recv().unwrap_or_default();
            self.batch.push((p.clone(), spans));
        }
        let (_, spans) = self.batch.last_mut().expect("pushed above");
        spans
    }
}

impl SpanSink for Batcher<'_> {
    fn span(&mut self, p: &ProcessKey, s: Span) -> std::io::Result<()> {
        self.last_of(p).push(s);
        self.counted(1)
    }

    /// A line's spans move over in their own vector, not span by span: each span is written
    /// once on this thread, where copying it into the batch wrote it twice.
    fn spans(&mut self, p: &ProcessKey, spans: &mut Vec<Span>) -> std::io::Result<()> {
        let n = spans.len();
        if n == 0 {
            return Ok(());
        }
        if n < OWN_VECTOR_SPANS {
            self.last_of(p).append(spans);
        } else {
            let room = self.spare.try_recv().unwrap_or_default();
            self.batch.push((p.clone(), std::mem::replace(spans, room)));
        }
        self.counted(n)
    }
}

/// Converts `inputs` to one trace-event file written to `out`. Returns whether any input line
/// was skipped, and what the writer did. Parsing runs on a thread of its own, a bounded
/// number of batches ahead of the writer.
pub fn convert<W: Write>(
    inputs: &[PathBuf],
    out: W,
    limits: Limits,
) -> Result<(bool, WriterStats), String> {
    let c = convert_merging(inputs, out, limits, &kineto::Profiles::none())?;
    Ok((c.skipped, c.stats))
}

/// What [`convert_merging`] did.
pub struct Converted {
    /// Whether any input line was skipped.
    pub skipped: bool,
    pub stats: WriterStats,
    /// Each profiler trace merged, in order.
    pub merged: Vec<kineto::Merged>,
    /// The earliest start and latest end of the spans (Unix ns), when there were any.
    pub span_range_ns: Option<(u64, u64)>,
}

/// [`convert`], with the events of `profiles` merged into the same file on the same clock:
/// their pids are kept from the spans' processes, and the file's time origin is early enough
/// for both. The profilers' events are written after the spans', each on its own line.
pub fn convert_merging<W: Write>(
    inputs: &[PathBuf],
    out: W,
    limits: Limits,
    profiles: &kineto::Profiles,
) -> Result<Converted, String> {
    let mut w = TraceEventWriter::new(out, limits).map_err(|e| e.to_string())?;
    profiles.prepare(&mut w);
    // Only when merging: the range is there to tell two clocks that disagree.
    let ranged = !profiles.is_empty();
    let mut range: Option<(u64, u64)> = None;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(8);
    // Emptied span vectors go back to the reading thread to be filled again: fresh memory
    // for each batch cost page faults on both threads.
    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<Vec<Span>>(SPARE_VECTORS);
    let reader = std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("convert-read".into())
            .spawn_scoped(scope, move || {
                let mut batcher = Batcher {
                    batch: Vec::new(),
                    spans: 0,
                    full: FIRST_BATCH_SPANS,
                    tx: &tx,
                    spare: &spare_rx,
                };
                let r = read_all_into(inputs, &mut batcher);
                if !batcher.batch.is_empty() {
                    let _ = batcher.send();
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
                if ranged {
                    for s in spans.iter().filter(|s| s.start_ns > 0) {
                        let (a, b) = range.get_or_insert((s.start_ns, s.end_ns));
                        *a = (*a).min(s.start_ns);
                        *b = (*b).max(s.end_ns.max(s.start_ns));
                    }
                }
                written = w.push_all(&p, &mut spans);
                if written.is_err() {
                    break 'batches;
                }
                // Freed here when the reading thread has enough, or has finished.
                if spans.capacity() <= SPARE_ROOM {
                    let _ = spare_tx.try_send(spans);
                }
            }
        }
        (Ok(reader.join()), written)
    });
    let (read, written) = reader;
    written.map_err(|e| format!("writing the output: {e}"))?;
    let skipped = read?
        .map_err(|_| "the reading thread panicked".to_owned())?
        .map_err(|e| e.to_string())?;
    let merged = profiles.write(&mut w)?;
    let (mut out, stats) = w.finish().map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    Ok(Converted {
        skipped,
        stats,
        merged,
        span_range_ns: range,
    })
}

/// Reads every input, handing spans to `each`; reports skipped lines on stderr.
/// Returns whether any line was skipped.
pub fn read_all(
    inputs: &[PathBuf],
    mut each: &mut dyn FnMut(&ProcessKey, Span) -> std::io::Result<()>,
) -> Result<bool, InputError> {
    read_all_into(inputs, &mut each)
}

/// [`read_all`] into a sink that may take a line's spans at once.
fn read_all_into(inputs: &[PathBuf], sink: &mut dyn SpanSink) -> Result<bool, InputError> {
    let mut skipped_any = false;
    for path in inputs {
        let report = read_spans_into(path, sink)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    fn span(id: u64) -> Span {
        Span {
            trace_id: 1,
            span_id: id,
            parent: 0,
            name: format!("s{id}"),
            start_ns: id,
            end_ns: id + 1,
            attrs: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            error: None,
            role: slicetrace_spans::model::Role::Slice,
        }
    }

    fn process(pid: u64) -> ProcessKey {
        ProcessKey {
            pid,
            ..ProcessKey::default()
        }
    }

    #[test]
    fn batches_hold_every_span_in_order_with_its_process() {
        let (tx, rx) = sync_channel::<Batch>(1 << 10);
        let (spare_tx, spare_rx) = sync_channel::<Vec<Span>>(4);
        let mut b = Batcher {
            batch: Vec::new(),
            spans: 0,
            full: FIRST_BATCH_SPANS,
            tx: &tx,
            spare: &spare_rx,
        };
        let mut sent = Vec::new();
        let mut next = 0u64;
        // Lines of every size around the one that goes over in its own vector, one span at a
        // time too, from two processes one after the other, past several batches.
        for round in 0..400u64 {
            let p = process(round % 3 % 2);
            let n = (round * 7 % 70) as usize;
            if round % 5 == 0 {
                for _ in 0..n {
                    b.span(&p, span(next)).unwrap();
                    sent.push((p.pid, next));
                    next += 1;
                }
                continue;
            }
            let mut line: Vec<Span> = (next..next + n as u64).map(span).collect();
            sent.extend((next..next + n as u64).map(|id| (p.pid, id)));
            next += n as u64;
            if round % 7 == 0 {
                let _ = spare_tx.try_send(Vec::with_capacity(8));
            }
            b.spans(&p, &mut line).unwrap();
            assert!(line.is_empty());
        }
        assert!(next > 3 * BATCH_SPANS as u64);
        b.send().unwrap();
        drop(tx);
        let mut got = Vec::new();
        let mut batches = 0;
        let mut full = FIRST_BATCH_SPANS;
        for batch in rx {
            batches += 1;
            let n: usize = batch.iter().map(|(_, s)| s.len()).sum();
            // Sent once full, and small at first: never far past the size.
            assert!(n < full + 70, "{n} spans in a batch of {full}");
            full = (full * 2).min(BATCH_SPANS);
            for (p, spans) in batch {
                got.extend(spans.into_iter().map(|s| (p.pid, s.span_id)));
            }
        }
        assert!(batches > 3);
        assert_eq!(got, sent);
    }
}
