//! Counters shared by the load threads and the sampler, and latency histograms.
//!
//! Each load thread owns its histograms (no sharing on the hot path) and hands them back when it
//! ends; only the per-second counters are shared, as relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use crate::result::Latency;

/// Latencies are recorded in µs up to an hour; longer is clamped (and would be a broken run).
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

#[derive(Default)]
pub struct Counters {
    /// Records created by producers (acknowledged or not).
    pub generated_records: AtomicU64,
    pub published_records: AtomicU64,
    pub published_bytes: AtomicU64,
    pub consumed_records: AtomicU64,
    pub consumed_bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Publish latency so far, for the progress line only (the result uses the histograms).
    pub latency_sum_us: AtomicU64,
    pub latency_count: AtomicU64,
    pub latency_max_us: AtomicU64,
    /// Highest publish latency acknowledged since the sampler last took it (per-second max).
    pub interval_latency_max_us: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
        .unwrap_or_else(|e| unreachable!("fixed bounds are valid: {e}"))
}

pub fn record(h: &mut Histogram<u64>, us: u64, count: u64) {
    h.saturating_record_n(us.clamp(1, LATENCY_US_MAX), count);
}

/// Percentiles plotted HDR-style: log-spaced towards 100 (… 99, 99.9, 99.99, …).
fn plot_percentiles() -> Vec<f64> {
    let mut v = Vec::new();
    // Ten points per decade of 1/(1-p), from 0% to 99.9999%.
    for i in 0..=60 {
        let tail = 10f64.powf(-(i as f64) / 10.0);
        v.push(100.0 * (1.0 - tail));
    }
    v
}

pub fn summarize(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let mut raw = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut raw)
        .unwrap_or_else(|e| unreachable!("serializing into memory cannot fail: {e}"));
    let mut percentiles: Vec<(f64, u64)> = plot_percentiles()
        .into_iter()
        .map(|p| (p, h.value_at_quantile(p / 100.0)))
        .collect();
    percentiles.push((100.0, h.max()));
    Some(Latency {
        count: h.len(),
        mean_us: h.mean(),
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        p9999_us: h.value_at_quantile(0.9999),
        max_us: h.max(),
        percentiles,
        histogram: base64::engine::general_purpose::STANDARD.encode(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn summary_round_trips_the_raw_histogram() {
        let mut h = histogram();
        for us in 1..=10_000u64 {
            record(&mut h, us, 1);
        }
        record(&mut h, 0, 1);
        let s = summarize(&h).expect("non-empty");
        assert_eq!(s.count, 10_001);
        assert!((4_990..=5_010).contains(&s.p50_us), "p50 {}", s.p50_us);
        assert!((9_880..=9_910).contains(&s.p99_us), "p99 {}", s.p99_us);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&s.histogram)
            .expect("base64");
        let back: Histogram<u64> = Deserializer::new().deserialize(&mut &raw[..]).expect("V2");
        assert_eq!(back.len(), h.len());
        assert_eq!(back.max(), h.max());
        assert!(summarize(&histogram()).is_none());
        assert!(s
            .percentiles
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }
}
