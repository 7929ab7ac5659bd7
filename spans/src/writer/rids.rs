//! Each trace's request id, as the writer adds it to the args of the trace's slices.
//!
//! A request's span ends last, so its rid is looked up when its slices are written, the
//! reorder window after it was filed, when its slot in a table sized for the whole index window
//! and its string are both cold. The slices of a request are written close together, so a few
//! dozen traces looked up lately answer nearly all of them from cache. (A
//! trace answered from there may be one the index window has since forgotten: its rid is
//! still right.)

use super::two_gen::TwoGen;
use crate::util::json_str;
use crate::util::mix64;
use std::sync::Arc;

/// Traces whose answer is kept at hand (a power of two).
const RECENT: usize = 64;

pub(super) struct Rids {
    /// The rid of each trace seen in the index window, as a JSON string.
    all: TwoGen<u128, Arc<str>>,
    /// The answers for traces looked up lately, by a hash of the trace id; `None` is a trace
    /// without a rid (yet: filing one updates this too).
    recent: Vec<(u128, Option<Arc<str>>)>,
}

impl Rids {
    pub fn new(window: usize) -> Rids {
        Rids {
            all: TwoGen::new(window),
            // Slots start as trace 0 with no answer; trace 0 (invalid in OpenTelemetry) is
            // therefore always looked up afresh.
            recent: vec![(0, None); RECENT],
        }
    }

    fn slot(trace: u128) -> usize {
        mix64(trace as u64 ^ (trace >> 64) as u64) as usize % RECENT
    }

    pub fn insert(&mut self, trace: u128, rid: &str) {
        let mut text = String::with_capacity(rid.len() + 2);
        json_str(&mut text, rid);
        let text: Arc<str> = text.into();
        let slot = &mut self.recent[Self::slot(trace)];
        if slot.0 == trace {
            slot.1 = Some(text.clone());
        }
        self.all.insert(trace, text);
    }

    /// The rid of `trace` as a JSON string, if one was filed.
    pub fn get(&mut self, trace: u128) -> Option<&str> {
        let i = Self::slot(trace);
        if self.recent[i].0 != trace || trace == 0 {
            self.recent[i] = (trace, self.all.get(&trace).cloned());
        }
        self.recent[i].1.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers match a plain map's, whatever order lookups and filings come in, for traces
    /// that share a cache slot and for rids filed after a trace was looked up.
    #[test]
    fn answers_are_those_of_a_plain_map() {
        let mut rids = Rids::new(1 << 20);
        let mut model = std::collections::HashMap::new();
        let mut next = crate::util::xorshift(0x2545_f491_4f6c_dd1d);
        for step in 0..50_000u64 {
            // Few traces, so that slots are shared and rids change while cached.
            let trace = (next() % 300) as u128 * 0x1_0000_0001_0000_0001;
            if next() % 4 == 0 {
                let rid = format!("r\"{step}");
                rids.insert(trace, &rid);
                model.insert(trace, rid);
            } else {
                let want = model.get(&trace).map(|r| {
                    let mut t = String::new();
                    json_str(&mut t, r);
                    t
                });
                assert_eq!(rids.get(trace), want.as_deref(), "step {step}");
            }
        }
    }
}
