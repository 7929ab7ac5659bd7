//! Which requests are traced: OpenTelemetry's standard samplers, with the ratio decided from the
//! request id, so that every thread and process decides alike with nothing shared.
//!
//! A ratio sampler (`traceidratio`) is applied on the traced thread: a call for a request it
//! leaves out returns after one load and a multiply. A parent-based sampler needs the upstream's
//! decision, which only the request's origin record carries; the calls record as usual and the
//! drainer builds nothing of a request that is not sampled.

use crate::ids::Rid;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// A share of requests, kept as the bound the request id's key is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio(u64);

/// The bound that lets every key through: keys are below 2^55.
pub(crate) const EVERY: u64 = 1 << 55;

impl Ratio {
    /// `None` unless `0 <= r <= 1`.
    pub fn new(r: f64) -> Option<Ratio> {
        (0.0..=1.0)
            .contains(&r)
            .then_some(Ratio((r * EVERY as f64) as u64))
    }

    pub fn get(self) -> f64 {
        self.0 as f64 / EVERY as f64
    }

    /// Whether the request falls inside the share: the same answer for the same id anywhere.
    #[inline(always)]
    pub fn admits(self, rid: Rid) -> bool {
        key(rid) < self.0
    }
}

/// The request's sampling key: the top 55 bits of the id times the golden ratio (Fibonacci
/// hashing; string ids are hashes already, and integer ids that count up spread evenly). 55,
/// so that the traced threads' gate has room beside the bound for the levels (`local::handle`).
#[inline(always)]
pub(crate) fn key(rid: Rid) -> u64 {
    rid.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 9
}

/// What decides a request that has no upstream decision (or, with [`Sampler::TraceIdRatio`],
/// every request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio(Ratio),
}

/// `OTEL_TRACES_SAMPLER`'s samplers. The default is `ParentBased(AlwaysOn)`, as OpenTelemetry's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// Every request (an upstream's decision is not asked).
    AlwaysOn,
    /// No request.
    AlwaysOff,
    /// A share of requests by their id, whatever the upstream decided.
    TraceIdRatio(Ratio),
    /// The upstream's decision for a request that came with one (a gateway's `traceparent`, a
    /// propagated context); `Root` for the others.
    ParentBased(Root),
}

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler::ParentBased(Root::AlwaysOn)
    }
}

impl Sampler {
    /// The sampler `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name; `Err` says what
    /// was expected of which.
    pub fn from_vars(
        name: Option<&str>,
        arg: Option<&str>,
    ) -> Result<Sampler, (&'static str, &'static str)> {
        let ratio = || -> Result<Ratio, (&'static str, &'static str)> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(Ratio::new(1.0).expect("1 is a ratio")),
                Some(a) => a
                    .parse::<f64>()
                    .ok()
                    .and_then(Ratio::new)
                    .ok_or(("OTEL_TRACES_SAMPLER_ARG", "a number from 0 to 1")),
            }
        };
        Ok(match name.map(str::trim).filter(|n| !n.is_empty()) {
            None | Some("parentbased_always_on") => Sampler::ParentBased(Root::AlwaysOn),
            Some("always_on") => Sampler::AlwaysOn,
            Some("always_off") => Sampler::AlwaysOff,
            Some("traceidratio") => Sampler::TraceIdRatio(ratio()?),
            Some("parentbased_always_off") => Sampler::ParentBased(Root::AlwaysOff),
            Some("parentbased_traceidratio") => Sampler::ParentBased(Root::Ratio(ratio()?)),
            Some(_) => {
                return Err((
                    "OTEL_TRACES_SAMPLER",
                    "always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio",
                ))
            }
        })
    }
}

// The session's sampler, as the traced threads and the drainer read it.
static ROOT_KIND: AtomicU8 = AtomicU8::new(ROOT_ON);
static ROOT_RATIO: AtomicU64 = AtomicU64::new(0);
static PARENT_BASED: AtomicU8 = AtomicU8::new(1);
/// Requests the traced threads left out (their `req_start` or `set_propagate_context`).
pub(crate) static LEFT_OUT_AT_ORIGIN: AtomicU64 = AtomicU64::new(0);

const ROOT_ON: u8 = 0;
const ROOT_OFF: u8 = 1;
const ROOT_RATIO_KIND: u8 = 2;

/// Sets the session's sampler; returns the bound of request keys the traced threads let
/// through: `EVERY`, or a ratio's (0 for `always_off`: no key is below it).
pub(crate) fn install(s: Sampler) -> u64 {
    let none = Ratio::new(0.0).expect("0 is a ratio");
    let (root, parent_based, filter) = match s {
        Sampler::AlwaysOn => (Root::AlwaysOn, false, None),
        Sampler::AlwaysOff => (Root::AlwaysOff, false, Some(none)),
        Sampler::TraceIdRatio(r) => (Root::AlwaysOn, false, Some(r)),
        Sampler::ParentBased(root) => (root, true, None),
    };
    let (kind, ratio) = match root {
        Root::AlwaysOn => (ROOT_ON, 0),
        Root::AlwaysOff => (ROOT_OFF, 0),
        Root::Ratio(r) => (ROOT_RATIO_KIND, r.0),
    };
    ROOT_KIND.store(kind, Ordering::Relaxed);
    ROOT_RATIO.store(ratio, Ordering::Relaxed);
    PARENT_BASED.store(parent_based as u8, Ordering::Relaxed);
    filter.map_or(EVERY, |r| r.0)
}

/// Whether the request is sampled: by the upstream's decision `upstream` under a parent-based
/// sampler, else by the root sampler. (Requests a thread filter left out record nothing.)
pub(crate) fn decide(rid: Rid, upstream: Option<bool>) -> bool {
    match upstream {
        Some(flag) if PARENT_BASED.load(Ordering::Relaxed) != 0 => flag,
        _ => match ROOT_KIND.load(Ordering::Relaxed) {
            ROOT_ON => true,
            ROOT_OFF => false,
            _ => Ratio(ROOT_RATIO.load(Ordering::Relaxed)).admits(rid),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_variables_name_each_sampler() {
        let r = |x| Ratio::new(x).unwrap();
        let cases: &[(Option<&str>, Option<&str>, Sampler)] = &[
            (None, None, Sampler::ParentBased(Root::AlwaysOn)),
            (Some(""), Some("0.3"), Sampler::ParentBased(Root::AlwaysOn)),
            (Some("always_on"), None, Sampler::AlwaysOn),
            (Some("always_off"), None, Sampler::AlwaysOff),
            (
                Some("traceidratio"),
                Some("0.25"),
                Sampler::TraceIdRatio(r(0.25)),
            ),
            (Some("traceidratio"), None, Sampler::TraceIdRatio(r(1.0))),
            (
                Some(" parentbased_traceidratio "),
                Some(" 0 "),
                Sampler::ParentBased(Root::Ratio(r(0.0))),
            ),
            (
                Some("parentbased_always_off"),
                None,
                Sampler::ParentBased(Root::AlwaysOff),
            ),
        ];
        for (name, arg, want) in cases {
            assert_eq!(
                Sampler::from_vars(*name, *arg),
                Ok(*want),
                "{name:?} {arg:?}"
            );
        }
        for (name, arg, var) in [
            ("traceidratio", "1.5", "OTEL_TRACES_SAMPLER_ARG"),
            ("traceidratio", "-0.1", "OTEL_TRACES_SAMPLER_ARG"),
            (
                "parentbased_traceidratio",
                "half",
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            ("jaeger_remote", "", "OTEL_TRACES_SAMPLER"),
        ] {
            assert_eq!(
                Sampler::from_vars(Some(name), Some(arg)).unwrap_err().0,
                var
            );
        }
    }

    #[test]
    fn a_ratio_keeps_its_share_of_string_and_counting_ids() {
        let tenth = Ratio::new(0.1).unwrap();
        assert!((tenth.get() - 0.1).abs() < 1e-12);
        let n = 200_000u64;
        let counted = (0..n).filter(|&i| tenth.admits(Rid(i))).count() as f64;
        let strings = (0..n)
            .filter(|i| tenth.admits(Rid::from_str_id(&format!("req-{i}"))))
            .count() as f64;
        for kept in [counted, strings] {
            // 3 standard deviations of a binomial(200 000, 0.1): about 400.
            assert!((kept - 20_000.0).abs() < 400.0, "{kept}");
        }
        assert!((0..1000).all(|i| Ratio::new(1.0).unwrap().admits(Rid(i))));
        assert!((0..1000).all(|i| !Ratio::new(0.0).unwrap().admits(Rid(i))));
    }

    /// The traced threads' gate decides as the ratio does, for any id, whatever levels it also
    /// carries, and is never "off".
    #[test]
    fn the_gate_decides_as_its_ratio() {
        use crate::local::handle::{gate, passes, OFF};
        let ids = [0, 1, 2, 255, 256, u64::MAX, 1 << 63, 0x9e37_79b9_7f4a_7c15]
            .into_iter()
            .chain((0..2000).map(|i: u64| i.wrapping_mul(0x2545_f491_4f6c_dd1d)));
        for r in ids {
            let k = key(Rid(r));
            assert!(k < EVERY, "{r:x}");
            for bound in [0, 1, k, k + 1, EVERY / 3, EVERY - 1, EVERY] {
                for above in [0u8, 0xfe, 0xf0, 0x80] {
                    let g = gate(bound, above);
                    assert_ne!(g, OFF);
                    assert_eq!(g as u8 & !1, above);
                    assert_eq!(
                        passes(g, Rid(r)),
                        Ratio(bound).admits(Rid(r)),
                        "{r:x} {bound}"
                    );
                }
            }
        }
    }
}
