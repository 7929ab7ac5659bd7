//! Turning raw ticks into Unix nanoseconds, on the drainer.
//!
//! An anchor pairs a raw reading with the system clock; a tick converts as the anchor's Unix time
//! plus the calibrated distance in nanoseconds. Re-anchoring every few seconds keeps a long run
//! from drifting away from the system clock (TSC frequency error is a few ppm, so a one-second
//! anchor age drifts microseconds, not milliseconds).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct TickClock {
    clock: quanta::Clock,
    anchor_raw: u64,
    anchor_unix: u64,
    anchored_at: Instant,
    every: Duration,
}

/// Which clock source `quanta` chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// The CPU's time-stamp counter, calibrated against the OS monotonic clock.
    Tsc,
    /// The OS monotonic clock: quanta found no usable TSC (a VM without invariant TSC, say).
    OsMonotonic,
}

impl std::fmt::Display for ClockSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClockSource::Tsc => "TSC (calibrated against the OS monotonic clock)",
            ClockSource::OsMonotonic => "OS monotonic clock (no usable TSC: quanta fell back)",
        })
    }
}

/// quanta scales TSC ticks; on its OS fallback raw readings are already nanoseconds.
pub fn source(clock: &quanta::Clock) -> ClockSource {
    let probe = 1u64 << 40;
    if clock.delta_as_nanos(0, probe) == probe {
        ClockSource::OsMonotonic
    } else {
        ClockSource::Tsc
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl TickClock {
    pub fn new(clock: quanta::Clock, every: Duration) -> TickClock {
        let mut c = TickClock {
            clock,
            anchor_raw: 0,
            anchor_unix: 0,
            anchored_at: Instant::now(),
            every,
        };
        c.anchor();
        c
    }

    /// Takes the tightest of a few (raw, system, raw) samples, so a preemption between the reads
    /// does not skew the anchor.
    fn anchor(&mut self) {
        let mut best = (u64::MAX, 0, 0);
        for _ in 0..5 {
            let a = self.clock.raw();
            let unix = unix_now();
            let b = self.clock.raw();
            let width = self.clock.delta_as_nanos(a, b);
            if width < best.0 {
                best = (width, a + (b.wrapping_sub(a)) / 2, unix);
            }
        }
        self.anchor_raw = best.1;
        self.anchor_unix = best.2;
        self.anchored_at = Instant::now();
    }

    pub fn maybe_reanchor(&mut self) {
        if self.anchored_at.elapsed() >= self.every {
            self.anchor();
        }
    }

    pub fn to_unix(&self, raw: u64) -> u64 {
        if raw >= self.anchor_raw {
            self.anchor_unix + self.clock.delta_as_nanos(self.anchor_raw, raw)
        } else {
            self.anchor_unix
                .saturating_sub(self.clock.delta_as_nanos(raw, self.anchor_raw))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_close_to_the_system_clock() {
        let c = TickClock::new(quanta::Clock::new(), Duration::from_secs(1));
        let clock = quanta::Clock::new();
        let raw = clock.raw();
        let now = unix_now();
        let got = c.to_unix(raw);
        assert!(got.abs_diff(now) < 5_000_000, "{got} vs {now}");
        std::thread::sleep(Duration::from_millis(20));
        let later = c.to_unix(clock.raw());
        assert!(later >= got + 19_000_000, "{later} - {got}");
    }
}
