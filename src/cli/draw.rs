//! Seeded random draws for the CLI's synthetic traffic (demo and loadgen):
//! plausible numbers over `fastrand`, reproducible from one seed.

use std::time::Duration;

/// A seeded generator with the draws synthetic traces need.
#[derive(Debug, Clone)]
pub struct Rng(fastrand::Rng);

impl Rng {
    /// A generator; equal seeds give equal sequences.
    pub fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    /// Any 64-bit value.
    pub fn u64(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0.f64()
    }

    /// True with `probability`.
    pub fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// Uniform in [0, n), for `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n)
    }

    /// One of `items`, which is not empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.0.usize(..items.len())]
    }

    /// Standard normal, by the Box–Muller transform.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // in (0, 1], so ln is finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal around `median_ms`, clamped to `[min_ms, max_ms]`: most
    /// calls are quick, a few are slow, as in real latency distributions.
    pub fn latency(&mut self, median_ms: f64, sigma: f64, min_ms: f64, max_ms: f64) -> Duration {
        let ms = (median_ms.ln() + sigma * self.normal()).exp();
        Duration::from_secs_f64(ms.clamp(min_ms, max_ms) / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_enough_and_seeded() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        let draws: Vec<f64> = (0..10_000).map(|_| a.unit()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert_eq!(
            (0..10_000).map(|_| b.unit()).collect::<Vec<_>>(),
            draws,
            "same seed, same sequence"
        );
        assert!((0..1000).all(|_| a.below(7) < 7));
        let items = [1, 2, 3];
        assert!((0..100).all(|_| items.contains(a.pick(&items))));
    }

    #[test]
    fn latencies_stay_within_their_bounds() {
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            let d = rng.latency(10.0, 1.5, 2.0, 50.0);
            assert!(
                d >= Duration::from_millis(2) && d <= Duration::from_millis(50),
                "{d:?}"
            );
        }
    }
}
