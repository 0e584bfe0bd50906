//! Latency histograms (HDR, microseconds) and their JSON summaries.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::BenchError;

/// Largest value a histogram tracks, in microseconds (one hour). Larger values are
/// clamped to it; no bench load lasts that long.
pub const MAX_TRACKED_MICROS: u64 = 3_600_000_000;

/// Significant decimal digits kept by every histogram: 3 keeps each value within 0.1%
/// at about 185 KiB per histogram over [`MAX_TRACKED_MICROS`].
const SIGNIFICANT_DIGITS: u8 = 3;

/// Quantiles exported for cumulative-distribution plots: dense in the tail, where
/// proxies differ.
const CDF_QUANTILES: [f64; 31] = [
    0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96,
    0.97, 0.98, 0.99, 0.992, 0.994, 0.995, 0.996, 0.998, 0.999, 0.9995, 0.9999, 0.99995, 0.99999,
    1.0,
];

/// An HDR histogram of microsecond values.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Hist {
    /// An empty histogram over 1 µs ..= [`MAX_TRACKED_MICROS`].
    pub fn new() -> Result<Self, BenchError> {
        Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, SIGNIFICANT_DIGITS)
            .map(Self)
            .map_err(|e| BenchError::Histogram(format!("{e:?}")))
    }

    /// Records one value, clamped into the tracked range.
    pub fn record(&mut self, micros: u64) {
        self.0
            .saturating_record(micros.clamp(1, MAX_TRACKED_MICROS));
    }

    /// The value at quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    /// The JSON summary: count, mean, percentiles and CDF points.
    pub fn summary(&self) -> Summary {
        if self.0.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.0.len(),
            min: self.0.min(),
            mean: self.0.mean(),
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.0.max(),
            cdf: CDF_QUANTILES
                .iter()
                .map(|&q| (q, self.quantile(q)))
                .collect(),
        }
    }
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    /// `(quantile, value)` pairs for CDF plots.
    pub cdf: Vec<(f64, u64)>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn summary_of_uniform_values() {
        let mut h = Hist::new().unwrap();
        for v in 1..=10_000 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert!((s.p50 as i64 - 5_000).abs() <= 5, "{}", s.p50);
        assert!((s.p99 as i64 - 9_900).abs() <= 10, "{}", s.p99);
        assert!(s.max >= 9_990);
        assert_eq!(s.cdf.len(), CDF_QUANTILES.len());
        assert!(s.cdf.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn clamps() {
        let mut a = Hist::new().unwrap();
        a.record(0);
        a.record(u64::MAX);
        a.record(7);
        assert_eq!(a.summary().count, 3);
        assert_eq!(a.summary().min, 1);
        assert!(a.summary().max >= MAX_TRACKED_MICROS);
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Hist::new().unwrap().summary(), Summary::default());
    }
}
