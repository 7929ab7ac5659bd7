//! `slicetrace waterfall`: one request across threads and processes as an SVG — a row per
//! thread, nested slices stacked, link arrows between slices, a time axis from the request's
//! start. Two passes over the inputs: find the request's traces, then keep only their spans.

use crate::read_all;
use slicetrace_spans::model::{AttrValue, ProcessKey, Role, Span};
use slicetrace_spans::schema;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const LEFT: f64 = 290.0;
const PLOT: f64 = 940.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 86.0;
const LEVEL: f64 = 20.0;
const ROW_GAP: f64 = 12.0;

fn rid_of(s: &Span) -> Option<String> {
    match s.attr(schema::RID)? {
        AttrValue::Str(r) => Some(r.clone()),
        AttrValue::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub fn run(inputs: &[PathBuf], rid: &str, output: &Path) -> Result<bool, String> {
    // Pass 1: which traces hold the request.
    let mut rids: BTreeSet<String> = BTreeSet::new();
    let mut traces: BTreeSet<u128> = BTreeSet::new();
    let mut skipped = read_all(inputs, &mut |_, s| {
        if s.role != Role::Thread {
            if let Some(r) = rid_of(&s).filter(|r| r.starts_with(rid)) {
                rids.insert(r);
                traces.insert(s.trace_id);
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if rids.is_empty() {
        return Err(format!(
            "no request with a rid starting {rid:?} in the input"
        ));
    }
    if rids.len() > 1 {
        let some: Vec<&String> = rids.iter().take(5).collect();
        return Err(format!(
            "{} requests have a rid starting {rid:?} (e.g. {some:?}): give more of it",
            rids.len()
        ));
    }
    // Pass 2: their spans, and the names of every thread.
    let mut spans: Vec<(ProcessKey, Span)> = Vec::new();
    let mut threads: HashMap<(ProcessKey, u64), String> = HashMap::new();
    skipped |= read_all(inputs, &mut |p, s| {
        if s.role == Role::Thread {
            let tid = s.thread_id().unwrap_or(s.span_id);
            threads
                .entry((p.clone(), tid))
                .or_insert_with(|| thread_title(&s, tid));
        }
        if traces.contains(&s.trace_id) {
            spans.push((p.clone(), s));
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let rid = rids.into_iter().next().unwrap_or_default();
    let svg = render(&rid, &spans, &threads);
    std::fs::write(output, svg).map_err(|e| format!("{}: {e}", output.display()))?;
    eprintln!(
        "wrote {} ({} spans of request {rid})",
        output.display(),
        spans.len()
    );
    Ok(skipped)
}

/// A colour per slice name, the same in every drawing.
pub fn colour_of(name: &str) -> String {
    let mut h: u32 = 2166136261;
    for b in name.bytes() {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    let hue = (h % 360) as f64;
    let (s, l) = (0.55, 0.62);
    let c = (1.0 - (2.0 * l - 1.0f64).abs()) * s;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let m = l - c / 2.0;
    let (r, g, b) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let to = |v: f64| ((v + m) * 255.0).round() as u8;
    format!("#{:02x}{:02x}{:02x}", to(r), to(g), to(b))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_ms(ns: u64) -> String {
    if ns == 0 {
        return "0".to_owned();
    }
    let ms = ns as f64 / 1e6;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

/// A tick step of 1, 2 or 5 × 10^k ns giving about eight ticks.
fn tick_step(span_ns: u64) -> u64 {
    let raw = (span_ns / 8).max(1);
    let mut p = 1u64;
    while p.saturating_mul(10) <= raw {
        p *= 10;
    }
    [1, 2, 5, 10]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10 * p)
}

struct Row {
    title: String,
    first: u64,
    depth: usize,
    slices: Vec<usize>,
}

fn thread_title(s: &Span, tid: u64) -> String {
    let label = match s.attr(schema::THREAD_LABEL) {
        Some(AttrValue::Str(l)) => l.clone(),
        _ => schema::unlabelled_thread_title(tid),
    };
    let tp = s.attr(schema::TP_RANK).and_then(AttrValue::as_i64);
    schema::thread_title(&label, tp, None)
}

pub fn render(
    rid: &str,
    spans: &[(ProcessKey, Span)],
    threads: &HashMap<(ProcessKey, u64), String>,
) -> String {
    let process_name = |p: &ProcessKey| {
        if p.pid != 0 {
            format!("{} pid {}", p.service, p.pid)
        } else {
            p.service.clone()
        }
    };
    let by_id: HashMap<u64, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, (_, s))| (s.span_id, i))
        .collect();
    // Each slice's thread and depth, through its parents.
    let mut rows: Vec<Row> = Vec::new();
    let mut row_of: HashMap<(ProcessKey, u64), usize> = HashMap::new();
    let mut placed: Vec<(usize, usize, usize)> = Vec::new(); // (span, row, depth)
    for (i, (p, s)) in spans.iter().enumerate() {
        if s.role != Role::Slice {
            continue;
        }
        let mut depth = 0;
        let mut tid = s.thread_id();
        let mut at = s;
        while let Some(&j) = by_id.get(&at.parent) {
            let parent = &spans[j].1;
            if parent.role != Role::Slice {
                tid = tid.or(parent.thread_id());
                break;
            }
            depth += 1;
            tid = tid.or(parent.thread_id());
            at = parent;
            if depth > schema::MAX_DEPTH {
                break;
            }
        }
        let key = (p.clone(), tid.unwrap_or(0));
        let r = *row_of.entry(key.clone()).or_insert_with(|| {
            let label = threads
                .get(&key)
                .cloned()
                .unwrap_or_else(|| format!("thread {}", key.1));
            rows.push(Row {
                title: format!("{label} · {}", process_name(p)),
                first: u64::MAX,
                depth: 0,
                slices: Vec::new(),
            });
            rows.len() - 1
        });
        rows[r].first = rows[r].first.min(s.start_ns);
        rows[r].depth = rows[r].depth.max(depth + 1);
        rows[r].slices.push(i);
        placed.push((i, r, depth));
    }
    let t0 = spans
        .iter()
        .map(|(_, s)| s.start_ns)
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0);
    let t1 = spans
        .iter()
        .map(|(_, s)| s.end_ns)
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let scale = PLOT / (t1 - t0) as f64;
    let x = |ns: u64| LEFT + (ns.saturating_sub(t0)) as f64 * scale;

    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&r| (rows[r].first, rows[r].title.clone()));
    let mut row_y = vec![0.0; rows.len()];
    let mut y = TOP;
    let requests: Vec<&(ProcessKey, Span)> = spans
        .iter()
        .filter(|(_, s)| s.role == Role::Request)
        .collect();
    let req_top = y;
    y += requests.len() as f64 * LEVEL + ROW_GAP;
    for &r in &order {
        row_y[r] = y;
        y += rows[r].depth as f64 * LEVEL + ROW_GAP;
    }
    let height = y + 20.0;
    let width = LEFT + PLOT + RIGHT;

    let mut out = String::with_capacity(16 * 1024);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    out.push_str(
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>"##,
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="12" y="24" font-size="16" font-weight="bold">Request {} — {} across {} threads</text>"##,
        esc(rid),
        fmt_ms(t1 - t0),
        rows.len()
    );
    // Time axis.
    let step = tick_step(t1 - t0);
    let mut t = 0;
    while t <= t1 - t0 {
        let tx = x(t0 + t);
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#e3e3e3"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            TOP - 14.0,
            height - 16.0,
            TOP - 20.0,
            fmt_ms(t)
        );
        t += step;
    }
    // Requests (one span per process the request went through).
    for (k, (p, s)) in requests.iter().enumerate() {
        let ry = req_top + k as f64 * LEVEL;
        let w = ((s.end_ns - s.start_ns.min(s.end_ns)) as f64 * scale).max(1.0);
        let _ = writeln!(
            out,
            r##"<text x="12" y="{:.1}" fill="#222">{} · {}</text><rect x="{:.1}" y="{ry:.1}" width="{w:.1}" height="{:.1}" fill="#c9d3e0" stroke="#6b7b93"><title>{} — {}</title></rect>"##,
            ry + 13.0,
            esc(&s.name),
            esc(&process_name(p)),
            x(s.start_ns),
            LEVEL - 4.0,
            esc(&s.name),
            fmt_ms(s.end_ns.saturating_sub(s.start_ns))
        );
    }
    for &r in &order {
        let _ = writeln!(
            out,
            r##"<text x="12" y="{:.1}" fill="#222">{}</text><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#f0f0f0"/>"##,
            row_y[r] + 13.0,
            esc(&rows[r].title),
            row_y[r] - ROW_GAP / 2.0,
            LEFT + PLOT,
            row_y[r] - ROW_GAP / 2.0
        );
    }
    // Slices, outermost first.
    placed.sort_by_key(|&(_, _, d)| d);
    let mut pos: HashMap<u64, (f64, f64, f64)> = HashMap::new(); // span → (x0, x1, mid y)
    for &(i, r, depth) in &placed {
        let s = &spans[i].1;
        let (x0, x1) = (x(s.start_ns), x(s.end_ns.max(s.start_ns)));
        let w = (x1 - x0).max(1.0);
        let sy = row_y[r] + depth as f64 * LEVEL;
        let stroke = if s.error.is_some() {
            "#d62728"
        } else {
            "#40404080"
        };
        let mut tip = format!(
            "{} — {}",
            s.name,
            fmt_ms(s.end_ns.saturating_sub(s.start_ns))
        );
        if let Some(e) = &s.error {
            let _ = write!(tip, "\nerror: {e}");
        }
        for (k, v) in &s.attrs {
            let _ = write!(tip, "\n{k}: {v:?}");
        }
        let _ = writeln!(
            out,
            r##"<rect data-name="{}" x="{x0:.2}" y="{sy:.1}" width="{w:.2}" height="{:.1}" fill="{}" stroke="{stroke}"><title>{}</title></rect>"##,
            esc(&s.name),
            LEVEL - 3.0,
            colour_of(&s.name),
            esc(&tip)
        );
        if w > 7.0 * s.name.chars().count() as f64 + 6.0 {
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{:.1}" fill="#111" pointer-events="none">{}</text>"##,
                x0 + 3.0,
                sy + 13.0,
                esc(&s.name)
            );
        }
        pos.insert(s.span_id, (x0, x0 + w, sy + (LEVEL - 3.0) / 2.0));
    }
    // Links: from the linked slice's end to the linking slice's start.
    for &(i, _, _) in &placed {
        let s = &spans[i].1;
        for (_, target) in &s.links {
            if let (Some(&(_, fx1, fy)), Some(&(tx0, _, ty))) =
                (pos.get(target), pos.get(&s.span_id))
            {
                let mx = (fx1 + tx0) / 2.0;
                let _ = writeln!(
                    out,
                    r##"<path d="M{fx1:.1},{fy:.1} C{mx:.1},{fy:.1} {mx:.1},{ty:.1} {tx0:.1},{ty:.1}" fill="none" stroke="#333" stroke-width="1.2" marker-end="url(#arrow)"/>"##
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(1_000_000), 200_000);
        assert_eq!(tick_step(80), 10);
        assert_eq!(tick_step(7_000_000_000), 1_000_000_000);
        assert_eq!(colour_of("prefill"), colour_of("prefill"));
        assert_ne!(colour_of("prefill"), colour_of("decode"));
    }
}
