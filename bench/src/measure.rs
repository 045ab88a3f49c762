//! Measuring: latency histograms in nanoseconds, the cost of reading the clock, and
//! pinning the measuring thread to a core.

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Largest latency a histogram holds (60 s); longer ones are clamped to it.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// A latency histogram with nanosecond resolution and 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Latencies {
        let hist = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
            .expect("constant histogram bounds are valid");
        Latencies { hist }
    }

    /// Record one latency in nanoseconds (0 counts as 1 ns, the histogram's floor).
    pub fn record_ns(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
    }

    /// Record one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_ns(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The latency at `quantile` (0..=1) in microseconds; `None` when empty.
    pub fn quantile_us(&self, quantile: f64) -> Option<f64> {
        assert!((0.0..=1.0).contains(&quantile), "quantile out of range");
        if self.hist.is_empty() {
            return None;
        }
        Some(self.hist.value_at_quantile(quantile) as f64 / 1000.0)
    }

    /// Median in microseconds.
    pub fn p50_us(&self) -> Option<f64> {
        self.quantile_us(0.5)
    }

    /// 99th percentile in microseconds.
    pub fn p99_us(&self) -> Option<f64> {
        self.quantile_us(0.99)
    }

    /// 99.9th percentile in microseconds.
    pub fn p999_us(&self) -> Option<f64> {
        self.quantile_us(0.999)
    }

    /// Largest recorded latency in microseconds.
    pub fn max_us(&self) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.max() as f64 / 1000.0)
    }
}

/// Median cost in nanoseconds of timing nothing: two back-to-back `Instant::now()`.
/// Every per-call latency below includes this once.
pub fn timer_overhead_ns() -> u64 {
    let mut lat = Latencies::new();
    for _ in 0..10_000 {
        let start = Instant::now();
        let end = Instant::now();
        lat.record_ns(u64::try_from((end - start).as_nanos()).unwrap_or(u64::MAX));
    }
    lat.hist.value_at_quantile(0.5)
}

/// Pin the calling thread to `core`. Returns whether it worked (a core outside this
/// process's CPU set, e.g. on a one-CPU CI runner, leaves the thread unpinned).
pub fn pin_current(core: usize) -> bool {
    // Build the CoreId from the number: get_core_ids() lists only the current mask.
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

/// Pin the calling thread to `core`, or say on stderr that `who` runs unpinned.
pub fn pin_or_warn(core: usize, who: &str) -> bool {
    let pinned = pin_current(core);
    if !pinned {
        eprintln!("tabos-bench: could not pin {who} to core {core}; it runs unpinned");
    }
    pinned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_recorded_values() {
        let mut lat = Latencies::new();
        assert_eq!(lat.p50_us(), None);
        for ns in 1..=1000u64 {
            lat.record_ns(ns * 1000);
        }
        assert_eq!(lat.count(), 1000);
        let p50 = lat.p50_us().unwrap();
        assert!((499.0..=501.0).contains(&p50), "p50 {p50}");
        let p99 = lat.p99_us().unwrap();
        assert!((989.0..=991.0).contains(&p99), "p99 {p99}");
        assert!(lat.max_us().unwrap() >= p99);
    }

    #[test]
    fn zero_and_huge_latencies_are_clamped_not_lost() {
        let mut lat = Latencies::new();
        lat.record_ns(0);
        lat.record(Duration::from_secs(3600));
        assert_eq!(lat.count(), 2);
    }
}
