//! A mergeable latency sketch with bounded relative error.
//!
//! Values fall into logarithmic bins (the DDSketch scheme), so any quantile
//! is answered within [`RELATIVE_ACCURACY`] of the true value and two
//! sketches merge exactly. Hand-written rather than taken from a crate
//! because the graph keeps one sketch per edge side per minute: bins are
//! stored sparsely (only those that received a value), which keeps a quiet
//! minute at a few dozen bytes where a dense store costs kilobytes.
//! [`Sketch::encode`] writes that sparse form for the history store.

/// Guaranteed relative accuracy of every quantile (0.5 %, so estimates stay
/// well inside the 1 % the service graph promises).
pub const RELATIVE_ACCURACY: f64 = 0.005;

const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// Most bins a dense store spans before the sketch turns sparse (8 KiB).
const MAX_DENSE_BINS: usize = 2048;
/// Bins at which a merged sketch turns dense (a merge target, such as a
/// window's total, that will take more merges).
const DENSIFY_BINS: usize = 128;
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

    /// Lowest and highest key that may hold counts; `None` when empty.
    fn key_range(&self) -> Option<(i32, i32)> {
        match self {
            Self::Dense { counts, .. } if counts.is_empty() => None,
            Self::Dense { offset, counts } => Some((*offset, offset + counts.len() as i32 - 1)),
            Self::Sparse(bins) => Some((bins.first()?.0, bins.last()?.0)),
        }
    }
}

/// Grows a dense store to cover keys `low..=high`, unless that would span
/// more than [`MAX_DENSE_BINS`]; true when it covers them.
fn dense_cover(offset: &mut i32, counts: &mut Vec<u32>, low: i32, high: i32) -> bool {
    if counts.is_empty() {
        *offset = low;
    }
    let new_low = (*offset).min(low);
    let new_high = (*offset + counts.len() as i32 - 1).max(high);
    if (new_high - new_low + 1) as usize > MAX_DENSE_BINS {
        return false;
    }
    if new_low < *offset {
        counts.splice(0..0, std::iter::repeat_n(0, (*offset - new_low) as usize));
        *offset = new_low;
    }
    counts.resize((new_high - *offset + 1) as usize, 0);
    true
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
    ///
    /// Into an empty sketch this is a sealed copy. A sketch that receives
    /// many merges (a window's total, a compacted bucket) turns dense once
    /// it holds 128 bins (`DENSIFY_BINS`), so each further merge costs only
    /// `other`'s bins rather than a rebuild of the union.
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
        let Some((low, high)) = other.bins.key_range() else {
            return;
        };
        if let Bins::Dense { offset, counts } = &mut self.bins {
            if dense_cover(offset, counts, low, high) {
                let mut add = |key: i32, count: u32| {
                    let slot = &mut counts[(key - *offset) as usize];
                    *slot = slot.saturating_add(count);
                };
                match &other.bins {
                    Bins::Sparse(bins) => bins.iter().for_each(|&(k, c)| add(k, c)),
                    dense => dense.iter().for_each(|(k, c)| add(k, c)),
                }
                return;
            }
            self.seal();
        }
        let Bins::Sparse(mine) = &self.bins else {
            unreachable!("sealed above")
        };
        let mut merged = Vec::with_capacity(mine.len().max(other.bin_count()));
        let (mut a, mut b) = (
            mine.iter().copied().peekable(),
            other.bins.iter().peekable(),
        );
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
        let span = match (merged.first(), merged.last()) {
            (Some((first, _)), Some((last, _))) => (last - first + 1) as usize,
            _ => 0,
        };
        self.bins = if merged.len() >= DENSIFY_BINS && span <= MAX_DENSE_BINS {
            let offset = merged[0].0;
            let mut counts = vec![0; span];
            for (key, count) in merged {
                counts[(key - offset) as usize] = count;
            }
            Bins::Dense { offset, counts }
        } else {
            Bins::Sparse(merged)
        };
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

    /// Smallest value, or 0 when empty.
    pub fn min(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.min }
    }

    /// The distribution as (value, count) pairs in ascending value order:
    /// one pair per bin, valued at its representative, except that the
    /// lowest pair carries the exact minimum and the highest the exact
    /// maximum (both lie in their bins, so the accuracy bound holds and a
    /// consumer that takes min/max from the values gets them exact).
    pub fn values(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(self.bin_count() + 1);
        if self.count == 0 {
            return out;
        }
        if self.zeros > 0 {
            out.push((self.min, self.zeros));
        }
        out.extend(
            self.bins
                .iter()
                .map(|(key, count)| (value_of(key).clamp(self.min, self.max), u64::from(count))),
        );
        if let Some(first) = out.first_mut() {
            first.0 = self.min;
        }
        if let Some(last) = out.last_mut() {
            last.0 = self.max;
        }
        out
    }

    /// Bins in use.
    pub fn bin_count(&self) -> usize {
        self.bins.iter().count()
    }

    /// Appends the sketch's bytes to `out`: the sparse form (version byte,
    /// counts as varints, sum/min/max as little-endian f64, then each bin as
    /// a key delta and a count), whatever the in-memory storage.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(ENCODING_VERSION);
        put_varint(out, self.count);
        put_varint(out, self.zeros);
        if self.count == 0 {
            return;
        }
        for value in [self.sum, self.min, self.max] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        put_varint(out, self.bins.iter().count() as u64);
        let mut previous = None;
        for (key, count) in self.bins.iter() {
            match previous {
                // Keys ascend, so every later delta is at least 1.
                Some(prev) => put_varint(out, (key - prev) as u64),
                None => put_varint(out, zigzag(key)),
            }
            put_varint(out, u64::from(count));
            previous = Some(key);
        }
    }

    /// The sketch [`Sketch::encode`] wrote; sealed (sparse).
    pub fn decode(bytes: &[u8]) -> Result<Sketch, SketchDecodeError> {
        let mut sketch = Sketch::default();
        sketch.decode_into(bytes)?;
        Ok(sketch)
    }

    /// Replaces `self` with the sketch `bytes` hold, reusing its bin
    /// storage: a scan decoding many rows allocates once.
    pub fn decode_into(&mut self, bytes: &[u8]) -> Result<(), SketchDecodeError> {
        let mut bins = match std::mem::take(&mut self.bins) {
            Bins::Sparse(mut bins) => {
                bins.clear();
                bins
            }
            Bins::Dense { .. } => Vec::new(),
        };
        let mut input = bytes;
        let version = take_byte(&mut input)?;
        if version != ENCODING_VERSION {
            return Err(SketchDecodeError::Version(version));
        }
        let count = take_varint(&mut input)?;
        let zeros = take_varint(&mut input)?;
        *self = Sketch {
            bins: Bins::Sparse(Vec::new()),
            zeros,
            count,
            ..Sketch::default()
        };
        let sketch = self;
        if count == 0 {
            return match (zeros, input.is_empty()) {
                (0, true) => Ok(()),
                _ => Err(SketchDecodeError::Inconsistent),
            };
        }
        let mut floats = [0.0; 3];
        for value in &mut floats {
            let (head, rest) = input
                .split_first_chunk::<8>()
                .ok_or(SketchDecodeError::Truncated)?;
            *value = f64::from_le_bytes(*head);
            input = rest;
        }
        [sketch.sum, sketch.min, sketch.max] = floats;
        let bin_count = take_varint(&mut input)?;
        // Each bin takes at least two bytes: a corrupt length cannot
        // make us allocate more than the input could hold.
        if bin_count > input.len() as u64 / 2 {
            return Err(SketchDecodeError::Truncated);
        }
        bins.reserve(bin_count as usize);
        let mut binned = 0u64;
        let mut key: i64 = 0;
        for i in 0..bin_count {
            let raw = take_varint(&mut input)?;
            key = if i == 0 {
                unzigzag(raw)
            } else if raw == 0 {
                return Err(SketchDecodeError::Inconsistent);
            } else {
                key.saturating_add(i64::try_from(raw).unwrap_or(i64::MAX))
            };
            let key = i32::try_from(key).map_err(|_| SketchDecodeError::Inconsistent)?;
            let bin = u32::try_from(take_varint(&mut input)?)
                .map_err(|_| SketchDecodeError::Inconsistent)?;
            binned += u64::from(bin);
            bins.push((key, bin));
        }
        let consistent = input.is_empty()
            && binned.checked_add(zeros) == Some(count)
            && floats.iter().all(|v| v.is_finite())
            && sketch.min <= sketch.max;
        if !consistent {
            return Err(SketchDecodeError::Inconsistent);
        }
        sketch.bins = Bins::Sparse(bins);
        Ok(())
    }
}

/// First byte of every encoded sketch; bump when the layout changes.
const ENCODING_VERSION: u8 = 1;

/// Why stored sketch bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchDecodeError {
    /// The bytes end early.
    #[error("sketch bytes end early")]
    Truncated,
    /// Written by an encoding this build does not know.
    #[error("unknown sketch encoding version {0}")]
    Version(u8),
    /// The fields contradict each other (counts, key order, non-finite values).
    #[error("inconsistent sketch bytes")]
    Inconsistent,
}

fn zigzag(value: i32) -> u64 {
    u64::from(((value << 1) ^ (value >> 31)) as u32)
}

fn unzigzag(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_byte(input: &mut &[u8]) -> Result<u8, SketchDecodeError> {
    let (&byte, rest) = input.split_first().ok_or(SketchDecodeError::Truncated)?;
    *input = rest;
    Ok(byte)
}

fn take_varint(input: &mut &[u8]) -> Result<u64, SketchDecodeError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take_byte(input)?;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(SketchDecodeError::Inconsistent)
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
    fn encoding_round_trips_dense_sparse_and_empty_sketches() {
        let mut seed = 7;
        let mut dense = Sketch::default();
        for _ in 0..5_000 {
            dense.insert(1e6 * (1.0 + 50.0 * uniform(&mut seed)));
        }
        dense.insert(0.0);
        assert!(matches!(dense.bins, Bins::Dense { .. }));
        let mut wide = Sketch::default();
        for v in [0.5, 3.0, 1e12, 7e3, 7e3] {
            wide.insert(v);
        }
        for sketch in [Sketch::default(), dense, wide] {
            let mut bytes = Vec::new();
            sketch.encode(&mut bytes);
            let back = Sketch::decode(&bytes).unwrap();
            assert_eq!(back, sketch);
            assert!(
                matches!(back.bins, Bins::Sparse(_)),
                "decoded sketches are sealed"
            );
            for q in [0.0, 0.5, 0.99, 1.0] {
                assert_eq!(back.quantile(q), sketch.quantile(q));
            }
        }
    }

    #[test]
    fn encoding_is_compact_and_decoding_rejects_damage() {
        let mut sketch = Sketch::default();
        for v in 1..=100 {
            sketch.insert(f64::from(v) * 1e5);
        }
        let mut bytes = Vec::new();
        sketch.encode(&mut bytes);
        // Header (1 + 1 + 1 + 24 + 1) plus two bytes a bin.
        assert!(
            bytes.len() <= 28 + 2 * sketch.bin_count() + 2,
            "{}",
            bytes.len()
        );
        for cut in 0..bytes.len() {
            assert!(Sketch::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(Sketch::decode(&extra), Err(SketchDecodeError::Inconsistent));
        let mut version = bytes.clone();
        version[0] = 9;
        assert_eq!(Sketch::decode(&version), Err(SketchDecodeError::Version(9)));
        let mut count = bytes;
        count[1] ^= 1;
        assert_eq!(Sketch::decode(&count), Err(SketchDecodeError::Inconsistent));
    }

    #[test]
    fn many_merges_turn_dense_and_equal_one_sketch() {
        let mut seed = 11;
        let mut whole = Sketch::default();
        let mut total = Sketch::default();
        let mut parts = Vec::new();
        for _ in 0..200 {
            let mut part = Sketch::default();
            for _ in 0..50 {
                // Whole nanoseconds, so sums agree whatever the order.
                let v = (1e6 * (1.0 + 400.0 * uniform(&mut seed))).round();
                part.insert(v);
                whole.insert(v);
            }
            part.seal();
            parts.push(part);
        }
        // A far outlier forces the total back to sparse, and it still adds up.
        let mut outlier = Sketch::default();
        outlier.insert(1e15);
        whole.insert(1e15);
        parts.insert(150, outlier);
        for (i, part) in parts.iter().enumerate() {
            total.merge(part);
            if i == 20 {
                assert!(
                    matches!(total.bins, Bins::Dense { .. }),
                    "dense after many merges"
                );
            }
        }
        assert!(matches!(total.bins, Bins::Sparse(_)));
        assert_eq!(total, whole);
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(total.quantile(q), whole.quantile(q));
        }
        // Dense into dense, growing downwards.
        let mut high = Sketch::default();
        let mut low = Sketch::default();
        for v in 0..300 {
            high.insert(1e8 + f64::from(v) * 1e6);
            low.insert(1e6 + f64::from(v) * 1e4);
        }
        let mut both = high.clone();
        both.merge(&low);
        let mut expected = Sketch::default();
        for v in 0..300 {
            expected.insert(1e8 + f64::from(v) * 1e6);
        }
        for v in 0..300 {
            expected.insert(1e6 + f64::from(v) * 1e4);
        }
        assert_eq!(both, expected);
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
