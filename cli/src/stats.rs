//! Distribution figures of a set of durations.

use serde::Serialize;

/// Count, mean and nearest-rank percentiles, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Dist {
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Dist {
    pub fn of(mut v: Vec<u64>) -> Dist {
        if v.is_empty() {
            return Dist::default();
        }
        v.sort_unstable();
        let n = v.len();
        // Nearest rank: the smallest value with at least p% of the values at or below it.
        let rank = |p: u64| v[((p as usize * n).div_ceil(100)).clamp(1, n) - 1];
        Dist {
            count: n as u64,
            mean_ns: v.iter().map(|&d| d as f64).sum::<f64>() / n as f64,
            p50_ns: rank(50),
            p90_ns: rank(90),
            p99_ns: rank(99),
            max_ns: v[n - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d = Dist::of((1..=100).rev().collect());
        assert_eq!(
            (d.count, d.p50_ns, d.p90_ns, d.p99_ns, d.max_ns),
            (100, 50, 90, 99, 100)
        );
        assert_eq!(d.mean_ns, 50.5);
        let one = Dist::of(vec![7]);
        assert_eq!((one.p50_ns, one.p99_ns, one.max_ns), (7, 7, 7));
        assert_eq!(Dist::of(vec![]).count, 0);
    }
}
