//! Measuring: latency histograms in nanoseconds, the cost of reading the clock, and
//! pinning the measuring thread to a core.

use crate::Error;
use hdrhistogram::Histogram;
use std::sync::Barrier;
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

    /// Mean latency in microseconds; `None` when empty.
    pub fn mean_us(&self) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.mean() / 1000.0)
    }

    /// Add every latency of `other` (e.g. another thread's) to this histogram.
    pub fn merge(&mut self, other: &Latencies) {
        self.hist
            .add(&other.hist)
            .expect("histograms of the same bounds always add");
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

/// Run `body(i, &mut states[i], barrier)` on one scoped thread per state, thread `i`
/// pinned to `core_of(i)`, and return their results in order (the first error wins).
///
/// The threads share one barrier: each body must wait on it before anything that can
/// fail, so that no thread is left waiting for one that gave up.
pub fn gang<S: Send, T: Send>(
    states: &mut [S],
    core_of: impl Fn(usize) -> usize + Sync,
    body: impl Fn(usize, &mut S, &Barrier) -> Result<T, Error> + Sync,
) -> Result<Vec<T>, Error> {
    assert!(!states.is_empty(), "a gang needs a thread");
    let barrier = Barrier::new(states.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .iter_mut()
            .enumerate()
            .map(|(i, state)| {
                let (barrier, body, core_of) = (&barrier, &body, &core_of);
                scope.spawn(move || {
                    pin_current(core_of(i));
                    body(i, state, barrier)
                })
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        let mut first_error = None;
        for handle in handles {
            match handle.join().expect("benchmark threads do not panic") {
                Ok(v) => out.push(v),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}

/// Run `call` untimed for a tenth of `per_run` (at least once), then timed for
/// `per_run` (at least 3 times).
pub fn timed_calls(
    per_run: Duration,
    mut call: impl FnMut() -> Result<(), Error>,
) -> Result<Latencies, Error> {
    let warm_up_until = Instant::now() + per_run.mul_f64(0.1);
    loop {
        call()?;
        if Instant::now() >= warm_up_until {
            break;
        }
    }
    let mut lat = Latencies::new();
    let deadline = Instant::now() + per_run;
    while lat.count() < 3 || Instant::now() < deadline {
        let start = Instant::now();
        call()?;
        lat.record(start.elapsed());
    }
    Ok(lat)
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
    fn merged_histograms_hold_both_threads_latencies() {
        let (mut a, mut b) = (Latencies::new(), Latencies::new());
        a.record_ns(1_000);
        b.record_ns(3_000);
        b.record_ns(3_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        let mean = a.mean_us().unwrap();
        assert!((2.3..=2.4).contains(&mean), "mean {mean}");
        assert_eq!(Latencies::new().mean_us(), None);
    }

    #[test]
    fn a_gang_starts_together_and_reports_the_first_error() {
        let mut states = vec![1u64, 2, 3];
        let out = gang(
            &mut states,
            |_| 0,
            |i, s, b| {
                b.wait();
                *s += 10;
                Ok(i)
            },
        )
        .unwrap();
        assert_eq!(out, vec![0, 1, 2]);
        assert_eq!(states, vec![11, 12, 13]);
        let failed = gang(
            &mut states,
            |_| 0,
            |i, _, b| {
                b.wait();
                if i == 1 {
                    Err(Error::call("thread 1", "failed"))
                } else {
                    Ok(())
                }
            },
        );
        assert!(failed.unwrap_err().to_string().contains("thread 1"));
    }

    #[test]
    fn zero_and_huge_latencies_are_clamped_not_lost() {
        let mut lat = Latencies::new();
        lat.record_ns(0);
        lat.record(Duration::from_secs(3600));
        assert_eq!(lat.count(), 2);
    }
}
