//! A mergeable latency sketch with bounded relative error.
//!
//! Values fall into logarithmic bins (the DDSketch scheme), so any quantile
//! is answered within [`RELATIVE_ACCURACY`] of the true value and two
//! sketches merge exactly. Hand-written rather than taken from a crate
//! because the graph keeps one sketch per edge side per minute: bins are
//! stored sparsely (only those that received a value), which keeps a quiet
//! minute at a few dozen bytes where a dense store costs kilobytes.

/// Guaranteed relative accuracy of every quantile (0.5 %, so estimates stay
/// well inside the 1 % the service graph promises).
pub const RELATIVE_ACCURACY: f64 = 0.005;

const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// Most bins a dense store spans before the sketch turns sparse (8 KiB).
const MAX_DENSE_BINS: usize = 2048;
/// Room left on each side of the first value, so early values rarely
/// force the dense store to move.
const DENSE_MARGIN: i32 = 32;

/// Bin counts: dense (an array from `offset`) while a sketch is written,
/// so an insert is an index; sparse once sealed or merged, so the minutes
/// kept for window queries cost only the bins they use.
#[derive(Debug, Clone)]
enum Bins {
    Dense { offset: i32, counts: Vec<u32> },
    Sparse(Vec<(i32, u32)>),
}

impl Default for Bins {
    fn default() -> Self {
        Self::Dense {
            offset: 0,
            counts: Vec::new(),
        }
    }
}

impl Bins {
    /// Non-empty bins in key order.
    fn iter(&self) -> Box<dyn Iterator<Item = (i32, u32)> + '_> {
        match self {
            Self::Dense { offset, counts } => Box::new(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(move |(i, c)| (offset + i as i32, *c)),
            ),
            Self::Sparse(bins) => Box::new(bins.iter().copied()),
        }
    }

    fn to_sparse(&self) -> Vec<(i32, u32)> {
        self.iter().collect()
    }
}

/// Log-binned sketch of non-negative values (nanoseconds here).
#[derive(Debug, Clone, Default)]
pub struct Sketch {
    bins: Bins,
    /// Values below 1 (zero-length spans), which have no log bin.
    zeros: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl PartialEq for Sketch {
    /// Equal when they hold the same values, whatever the storage.
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count
            && self.zeros == other.zeros
            && self.sum == other.sum
            && self.min == other.min
            && self.max == other.max
            && self.bins.iter().eq(other.bins.iter())
    }
}

fn ln_gamma() -> f64 {
    GAMMA.ln()
}

fn key_of(value: f64) -> i32 {
    (value.ln() / ln_gamma()).ceil() as i32
}

/// Representative value of a bin: the point whose relative distance to both
/// bin edges is equal, which bounds the error by the accuracy.
fn value_of(key: i32) -> f64 {
    2.0 * GAMMA.powi(key) / (GAMMA + 1.0)
}

fn sparse_insert(bins: &mut Vec<(i32, u32)>, key: i32) {
    match bins.binary_search_by_key(&key, |&(k, _)| k) {
        Ok(i) => bins[i].1 = bins[i].1.saturating_add(1),
        Err(i) => bins.insert(i, (key, 1)),
    }
}

impl Sketch {
    /// Records one value.
    pub fn insert(&mut self, value: f64) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
        if value < 1.0 {
            self.zeros += 1;
            return;
        }
        let key = key_of(value);
        match &mut self.bins {
            Bins::Dense { offset, counts } => {
                if counts.is_empty() {
                    *offset = key - DENSE_MARGIN;
                    counts.resize(2 * DENSE_MARGIN as usize + 1, 0);
                }
                let low = (*offset).min(key);
                let high = (*offset + counts.len() as i32 - 1).max(key);
                let span = (high - low + 1) as usize;
                if span > MAX_DENSE_BINS {
                    let mut sparse = self.bins.to_sparse();
                    sparse_insert(&mut sparse, key);
                    self.bins = Bins::Sparse(sparse);
                    return;
                }
                if low < *offset {
                    // Grow downwards with a margin, so this is rare.
                    let grow = ((*offset - low) + DENSE_MARGIN)
                        .min((MAX_DENSE_BINS - counts.len()) as i32);
                    counts.splice(0..0, std::iter::repeat_n(0, grow as usize));
                    *offset -= grow;
                }
                let index = (key - *offset) as usize;
                if index >= counts.len() {
                    let want = (index + 1 + DENSE_MARGIN as usize).min(MAX_DENSE_BINS);
                    counts.resize(want.max(index + 1), 0);
                }
                counts[index] = counts[index].saturating_add(1);
            }
            Bins::Sparse(bins) => sparse_insert(bins, key),
        }
    }

    /// Turns the store sparse: call when no more values are expected (a
    /// closed minute), to keep only the bins in use.
    pub fn seal(&mut self) {
        if let Bins::Dense { .. } = self.bins {
            self.bins = Bins::Sparse(self.bins.to_sparse());
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            self.seal();
            return;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum += other.sum;
        self.zeros += other.zeros;
        let mut merged = Vec::new();
        let (mut a, mut b) = (self.bins.iter().peekable(), other.bins.iter().peekable());
        loop {
            match (a.peek().copied(), b.peek().copied()) {
                (Some((ka, ca)), Some((kb, cb))) => {
                    if ka == kb {
                        merged.push((ka, ca.saturating_add(cb)));
                        a.next();
                        b.next();
                    } else if ka < kb {
                        merged.push((ka, ca));
                        a.next();
                    } else {
                        merged.push((kb, cb));
                        b.next();
                    }
                }
                (Some(bin), None) => {
                    merged.push(bin);
                    a.next();
                }
                (None, Some(bin)) => {
                    merged.push(bin);
                    b.next();
                }
                (None, None) => break,
            }
        }
        drop((a, b));
        self.bins = Bins::Sparse(merged);
    }

    /// The value at quantile `q` (0..=1), or 0 when empty.
    ///
    /// Uses the lower rank `floor(q * (n - 1))`, the nearest-rank definition
    /// most tools use, and clamps to the observed min and max.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        // The extremes are known exactly.
        if q <= 0.0 {
            return self.min;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).floor() as u64;
        if rank < self.zeros {
            return self.min;
        }
        let mut seen = self.zeros;
        for (key, count) in self.bins.iter() {
            seen += u64::from(count);
            if seen > rank {
                return value_of(key).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of values.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Mean, or 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Largest value, or 0 when empty.
    pub fn max(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.max }
    }

    /// Bins in use.
    pub fn bin_count(&self) -> usize {
        self.bins.iter().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    fn assert_within_one_percent(sketch: &Sketch, sorted: &[f64]) {
        for q in [0.5, 0.9, 0.99] {
            let expected = exact_quantile(sorted, q);
            let got = sketch.quantile(q);
            let error = (got - expected).abs() / expected;
            assert!(
                error <= 0.01,
                "q{q}: got {got}, expected {expected}, error {error}"
            );
        }
    }

    /// Deterministic pseudo-random stream (xorshift), so the test is reproducible.
    fn uniform(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn quantiles_of_a_log_normal_latency_distribution_are_within_one_percent() {
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        let mut values = Vec::new();
        let mut sketch = Sketch::default();
        for _ in 0..100_000 {
            // Box-Muller: log-normal around 20 ms with a long tail, in ns.
            let (u1, u2) = (uniform(&mut seed).max(1e-12), uniform(&mut seed));
            let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let value = (20e6f64.ln() + 0.8 * normal).exp();
            values.push(value);
            sketch.insert(value);
        }
        values.sort_by(f64::total_cmp);
        assert_within_one_percent(&sketch, &values);
        assert_eq!(sketch.count(), 100_000);
        assert!((sketch.mean() - values.iter().sum::<f64>() / 1e5).abs() < 1.0);
    }

    #[test]
    fn uniform_integers_and_merge_equal_a_single_sketch() {
        let values: Vec<f64> = (1..=10_000).map(|v| f64::from(v) * 1000.0).collect();
        let mut whole = Sketch::default();
        let mut left = Sketch::default();
        let mut right = Sketch::default();
        for (i, &v) in values.iter().enumerate() {
            whole.insert(v);
            if i % 3 == 0 {
                left.insert(v)
            } else {
                right.insert(v)
            }
        }
        left.merge(&right);
        assert_eq!(left.count(), whole.count());
        for q in [0.0, 0.25, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(left.quantile(q), whole.quantile(q));
        }
        assert_within_one_percent(&whole, &values);
        assert_eq!(whole.quantile(1.0), 10_000_000.0);
        assert_eq!(whole.quantile(0.0), 1000.0);
    }

    #[test]
    fn zeros_and_empty() {
        let mut sketch = Sketch::default();
        assert_eq!(sketch.quantile(0.5), 0.0);
        assert_eq!(sketch.max(), 0.0);
        sketch.insert(0.0);
        sketch.insert(0.0);
        sketch.insert(5_000.0);
        sketch.insert(5_000.0);
        assert_eq!(sketch.quantile(0.5), 0.0);
        let p90 = sketch.quantile(0.9);
        assert!((p90 - 5_000.0).abs() / 5_000.0 <= 0.005, "{p90}");
        assert_eq!(sketch.quantile(1.0), 5_000.0);
        sketch.insert(f64::NAN);
        sketch.insert(-1.0);
        assert_eq!(sketch.count(), 4);
    }

    #[test]
    fn sparse_storage_stays_small_for_few_values() {
        let mut sketch = Sketch::default();
        for v in [1e6, 1.001e6, 2e6, 2e6, 3e6] {
            sketch.insert(v);
        }
        assert_eq!(sketch.bin_count(), 3);
        let dense = sketch.clone();
        sketch.seal();
        assert_eq!(sketch, dense, "sealing keeps the values");
        sketch.insert(4e6);
        assert_eq!(sketch.bin_count(), 4, "a sealed sketch still takes values");
    }

    #[test]
    fn wide_ranges_grow_both_ways_and_fall_back_to_sparse() {
        let mut sketch = Sketch::default();
        let values = [1e6, 1e3, 1e9, 5.0, 1e12, 2e6];
        for v in values {
            sketch.insert(v);
        }
        assert!(
            matches!(sketch.bins, Bins::Sparse(_)),
            "1e12/5 spans more than the dense limit"
        );
        let mut narrow = Sketch::default();
        for v in [1e6, 5e5, 2e6, 1e5, 9e6] {
            narrow.insert(v);
        }
        assert!(matches!(narrow.bins, Bins::Dense { .. }));
        // Sorted: 1e5, 5e5, 1e6, 2e6, 9e6.
        for (q, expected) in [(0.25, 5e5), (0.5, 1e6), (0.75, 2e6)] {
            let got = narrow.quantile(q);
            assert!((got - expected).abs() / expected <= 0.005, "q{q}: {got}");
        }
        assert_eq!(sketch.quantile(0.0), 5.0);
        assert_eq!(sketch.quantile(1.0), 1e12);
    }
}
