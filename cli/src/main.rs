//! `slicetrace`: convert traces to Perfetto's trace-event JSON, summarise them, draw one request.
//!
//! Exit status: 0 when every input line was read, 2 when some lines were skipped (the output
//! holds everything else, and each skipped line is reported), 1 when the command failed.

use clap::{Parser, Subcommand};
use slicetrace_cli::{summary, waterfall};
use slicetrace_spans::writer::Limits;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[global_allocator]
static ALLOC: slicetrace_cli::allocator::Allocator = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "slicetrace",
    version,
    about = "Convert, summarise and draw slicetrace traces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Converts traces to a trace-event JSON file for ui.perfetto.dev or chrome://tracing.
    ///
    /// Reads OTLP/JSON lines (the OpenTelemetry Collector file exporter's output), slicetrace
    /// JSON-lines span dumps, or slicetrace trace-event files; several inputs (one per process)
    /// are merged into one file, with links across them drawn as flow arrows.
    ///
    /// With -f, PyTorch profiler traces (torch.profiler's export_chrome_trace, .json or
    /// .json.gz) are merged in too: their CPU ops, GPU kernels, counters and flows beside the
    /// request tracks, on the same clock.
    Convert {
        /// Input files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The trace-event file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// How long (trace time, ms) events wait for late spans, to write each track in order.
        #[arg(long, default_value_t = 2000)]
        window_ms: u64,
        /// A PyTorch profiler (Kineto) trace to merge into the output, its times aligned to the
        /// spans' through its baseTimeNanoseconds (repeat for one trace per rank).
        #[arg(
            short = 'f',
            long = "merge-torch",
            visible_alias = "torch-file",
            value_name = "FILE"
        )]
        merge_torch: Vec<PathBuf>,
        /// For a profiler trace that records no baseTimeNanoseconds and whose ts are not Unix
        /// times (Kineto of late April to early May 2024): the Unix time, in ns, that its ts 0
        /// stands for.
        #[arg(long, value_name = "NS", requires = "merge_torch")]
        torch_base_ns: Option<u64>,
    },
    /// Prints per slice name: count, mean, p50, p90, p99, max; per request: time in each phase.
    Summary {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Machine-readable JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Draws one request across threads and processes as an SVG waterfall.
    Waterfall {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The request id (the `rid` attribute), or the start of it.
        #[arg(long)]
        rid: String,
        /// The SVG file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Closes a trace-event file cut short (its process was killed) so that viewers open it.
    Repair { file: PathBuf },
}

fn convert(
    inputs: &[PathBuf],
    output: &Path,
    window_ms: u64,
    torch: &[PathBuf],
    torch_base_ns: Option<u64>,
) -> Result<bool, String> {
    // The profiler trace is read again after the output is created: writing over it would
    // lose it.
    if let Ok(out) = output.canonicalize() {
        if let Some(t) = torch
            .iter()
            .find(|t| t.canonicalize().is_ok_and(|t| t == out))
        {
            return Err(format!(
                "{}: is both a profiler trace to merge and the output",
                t.display()
            ));
        }
    }
    // Read before the output is created: a trace that cannot be placed leaves no file behind.
    let profiles = slicetrace_cli::kineto::Profiles::read(torch, torch_base_ns)?;
    let file = File::create(output).map_err(|e| format!("{}: {e}", output.display()))?;
    let limits = Limits {
        reorder_window_ns: window_ms.saturating_mul(1_000_000),
        ..Limits::default()
    };
    // The writer gathers whole lines and writes them a chunk at a time: no buffer here.
    let converted = slicetrace_cli::convert_merging(inputs, file, limits, &profiles)?;
    let (skipped, stats) = (converted.skipped, converted.stats);
    for m in &converted.merged {
        eprintln!("{}", m.describe());
        if let Some(warning) = converted.span_range_ns.and_then(|r| m.disjoint_from(r)) {
            eprintln!("{warning}");
        }
    }
    eprintln!(
        "wrote {}: {} slices, {} requests, {} instants, {} flows; {} links unresolved, {} slices \
         with no thread found, {} overlap lanes",
        output.display(),
        stats.slices,
        stats.requests,
        stats.instants,
        stats.flows,
        stats.links_unresolved,
        stats.spans_unplaced,
        stats.overlap_lanes
    );
    Ok(skipped)
}

fn run(cli: Cli) -> Result<bool, String> {
    match cli.command {
        Command::Convert {
            inputs,
            output,
            window_ms,
            merge_torch,
            torch_base_ns,
        } => convert(&inputs, &output, window_ms, &merge_torch, torch_base_ns),
        Command::Summary { inputs, json } => {
            let mut s = summary::Summary::default();
            let skipped = slicetrace_cli::read_all(&inputs, &mut |p, span| {
                s.add(p, span);
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            let report = s.finish();
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let written = if json {
                report.write_json(&mut out)
            } else {
                report.write_tables(&mut out)
            };
            written.map_err(|e| e.to_string())?;
            Ok(skipped)
        }
        Command::Waterfall {
            inputs,
            rid,
            output,
        } => waterfall::run(&inputs, &rid, &output),
        Command::Repair { file } => {
            match slicetrace_spans::repair::repair(&file)
                .map_err(|e| format!("{}: {e}", file.display()))?
            {
                slicetrace_spans::repair::Repaired::AlreadyValid => {
                    eprintln!("{}: already complete", file.display())
                }
                slicetrace_spans::repair::Repaired::Closed { dropped_bytes } => eprintln!(
                    "{}: closed; cut {dropped_bytes} bytes of a partial last event",
                    file.display()
                ),
            }
            Ok(false)
        }
    }
}

fn main() -> ExitCode {
    slicetrace_cli::allocator::keep_freed_memory();
    match run(Cli::parse()) {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(2),
        Err(e) => {
            eprintln!("slicetrace: {e}");
            ExitCode::FAILURE
        }
    }
}
