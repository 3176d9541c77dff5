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

/// Sparse log-binned sketch of non-negative values (nanoseconds here).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    /// `(bin key, count)`, sorted by key.
    bins: Vec<(i32, u32)>,
    /// Values below 1 (zero-length spans), which have no log bin.
    zeros: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
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
        match self.bins.binary_search_by_key(&key, |&(k, _)| k) {
            Ok(i) => self.bins[i].1 = self.bins[i].1.saturating_add(1),
            Err(i) => self.bins.insert(i, (key, 1)),
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum += other.sum;
        self.zeros += other.zeros;
        let mut merged = Vec::with_capacity(self.bins.len().max(other.bins.len()));
        let (mut a, mut b) = (self.bins.iter().peekable(), other.bins.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(ka, ca)), Some(&&(kb, cb))) => {
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
                (Some(&&bin), None) => {
                    merged.push(bin);
                    a.next();
                }
                (None, Some(&&bin)) => {
                    merged.push(bin);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.bins = merged;
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
        for &(key, count) in &self.bins {
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

    /// Bins in use, a measure of memory.
    pub fn bin_count(&self) -> usize {
        self.bins.len()
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
    }
}
