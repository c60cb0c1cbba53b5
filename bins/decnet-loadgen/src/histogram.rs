//! Latency histograms: log-linear buckets (at most 1/64 = 1.6 % relative
//! error), lock-free recording from every stream task, sparse JSON form that
//! merges by addition across processes.
//!
//! Values are whole microseconds. Values below 128 µs have a bucket each;
//! above that, every power of two is split into 64 equal buckets, so a
//! bucket's width is at most 1/64 of its lower bound.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two (as a bit count): 2^6 = 64.
const SUB_BITS: u32 = 6;
/// Values below this have a bucket of their own.
const LINEAR: u64 = 1 << (SUB_BITS + 1);
/// Number of buckets needed to cover every `u64`.
pub(crate) const BUCKETS: usize = bucket_of(u64::MAX) + 1;

/// The bucket holding `value`.
pub(crate) const fn bucket_of(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    let top = value >> shift; // in [64, 128)
    (LINEAR + (shift as u64 - 1) * (1 << SUB_BITS) + (top - (1 << SUB_BITS))) as usize
}

/// The smallest and largest values bucket `index` holds.
pub(crate) fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < LINEAR {
        return (index, index);
    }
    let rel = index - LINEAR;
    let shift = rel / (1 << SUB_BITS) + 1;
    let top = rel % (1 << SUB_BITS) + (1 << SUB_BITS);
    let low = top << shift;
    let high = low.saturating_add((1u64 << shift) - 1);
    (low, high)
}

/// A histogram many tasks record into at once (relaxed atomic adds).
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram.
    pub(crate) fn new() -> Self {
        AtomicHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    /// Count one value (microseconds).
    pub(crate) fn record(&self, micros: u64) {
        if let Some(slot) = self.counts.get(bucket_of(micros)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        self.max.fetch_max(micros, Ordering::Relaxed);
    }

    /// A copy of the counts, leaving them in place.
    pub(crate) fn snapshot(&self) -> Histogram {
        let mut histogram = Histogram::default();
        for (index, slot) in self.counts.iter().enumerate() {
            let n = slot.load(Ordering::Relaxed);
            if n > 0 {
                histogram.buckets.push((index, n));
            }
        }
        histogram.max = self.max.load(Ordering::Relaxed);
        histogram
    }

    /// A copy of the counts, resetting them to zero.
    pub(crate) fn take(&self) -> Histogram {
        let mut histogram = Histogram::default();
        for (index, slot) in self.counts.iter().enumerate() {
            let n = slot.swap(0, Ordering::Relaxed);
            if n > 0 {
                histogram.buckets.push((index, n));
            }
        }
        histogram.max = self.max.swap(0, Ordering::Relaxed);
        histogram
    }
}

/// A histogram snapshot: sparse `(bucket, count)` pairs in bucket order, and
/// the exact maximum. Serialized as is, merged by adding counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Histogram {
    /// `(bucket index, count)`, ascending, no zero counts.
    pub(crate) buckets: Vec<(usize, u64)>,
    /// The largest value recorded (exact), microseconds.
    pub(crate) max: u64,
}

impl Histogram {
    /// Number of values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// Add `other`'s counts to this one.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(ia, na)), Some(&&(ib, nb))) => {
                    if ia == ib {
                        merged.push((ia, na + nb));
                        a.next();
                        b.next();
                    } else if ia < ib {
                        merged.push((ia, na));
                        a.next();
                    } else {
                        merged.push((ib, nb));
                        b.next();
                    }
                }
                (Some(&&x), None) => {
                    merged.push(x);
                    a.next();
                }
                (None, Some(&&x)) => {
                    merged.push(x);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = merged;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1): the upper bound of the bucket
    /// holding the `ceil(q * count)`-th smallest value (never above the exact
    /// maximum), so a reported p99 is never optimistic by more than a bucket.
    /// `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // The rank of the wanted value, 1-based; at least the first value.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for &(index, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(bucket_range(index).1.min(self.max));
            }
        }
        Some(self.max)
    }

    /// `count`, p50, p99 and max in milliseconds, for summaries.
    pub(crate) fn stats(&self) -> LatencyStats {
        let ms = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
        LatencyStats {
            count: self.count(),
            p50_ms: ms(self.quantile(0.50)),
            p99_ms: ms(self.quantile(0.99)),
            max_ms: ms((self.count() > 0).then_some(self.max)),
        }
    }
}

/// Headline figures of a [`Histogram`], in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LatencyStats {
    /// Values recorded.
    pub(crate) count: u64,
    /// Median, ms (`None` when empty).
    pub(crate) p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub(crate) p99_ms: Option<f64>,
    /// Maximum, ms.
    pub(crate) max_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, high) = bucket_range(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert!(high >= low);
            assert_eq!(bucket_of(low), index);
            assert_eq!(bucket_of(high), index);
            if low >= LINEAR {
                // Width at most 1/64 of the lower bound.
                assert!((high - low + 1) * 64 <= low, "bucket {index} too wide");
            }
            expected_low = high.wrapping_add(1);
        }
        assert_eq!(bucket_range(BUCKETS - 1).1, u64::MAX);
    }

    fn filled(values: impl IntoIterator<Item = u64>) -> Histogram {
        let atomic = AtomicHistogram::new();
        for v in values {
            atomic.record(v);
        }
        atomic.take()
    }

    #[test]
    fn quantiles_of_small_values_are_exact() {
        let h = filled(1..=100);
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.99), Some(99));
        assert_eq!(h.quantile(1.0), Some(100));
        assert_eq!(h.quantile(0.0), Some(1));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn quantiles_of_large_values_are_within_two_percent() {
        // 1 ms .. 1 s in 1 ms steps: p50 = 500 ms, p99 = 990 ms.
        let h = filled((1..=1000).map(|ms| ms * 1000));
        let p50 = h.quantile(0.5).expect("p50") as f64;
        let p99 = h.quantile(0.99).expect("p99") as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert!(p99 >= 990_000.0, "never optimistic: {p99}");
        assert_eq!(h.quantile(1.0), Some(1_000_000));
        let stats = h.stats();
        assert_eq!(stats.max_ms, Some(1000.0));
    }

    #[test]
    fn merging_equals_recording_everything_once() {
        let a = filled([5, 200, 3000, 70_000]);
        let b = filled([5, 6, 70_001, 9_000_000]);
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(
            merged,
            filled([5, 200, 3000, 70_000, 5, 6, 70_001, 9_000_000])
        );
        let mut from_empty = Histogram::default();
        from_empty.merge(&a);
        assert_eq!(from_empty, a);
    }

    #[test]
    fn take_resets() {
        let atomic = AtomicHistogram::new();
        atomic.record(10);
        assert_eq!(atomic.snapshot().count(), 1);
        assert_eq!(atomic.take().count(), 1);
        assert_eq!(atomic.take(), Histogram::default());
    }
}
