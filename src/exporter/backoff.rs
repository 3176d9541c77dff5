//! The one retry back-off every exporter uses: exponential with "equal
//! jitter", or the server's own retry delay when it sent one.

use std::time::Duration;

/// Exponential back-off with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Before the first retry (before jitter).
    pub initial: Duration,
    /// The ceiling, also applied to a server's retry delay.
    pub max: Duration,
}

impl Backoff {
    /// Delay before retry number `retry` (1 for the first): `retry_after`
    /// when the server sent one, else `initial · 2^(retry-1)` of which the
    /// upper half is a uniform draw, so senders that failed together do not
    /// retry together yet every wait is at least half the nominal one;
    /// never above `max`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_with(retry, retry_after, fastrand::f64())
    }

    /// [`Backoff::delay`] with the draw given, in `[0, 1)`.
    pub fn delay_with(&self, retry: u32, retry_after: Option<Duration>, draw: f64) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max);
        }
        let exponent = retry.saturating_sub(1).min(31);
        let nominal = self.initial.saturating_mul(1 << exponent).min(self.max);
        nominal.mul_f64(0.5 + 0.5 * draw.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_is_capped() {
        for retry in 1..=40u32 {
            let nominal = Duration::from_millis(100)
                .saturating_mul(1 << (retry - 1).min(31))
                .min(Duration::from_secs(5));
            for _ in 0..200 {
                let delay = BACKOFF.delay(retry, None);
                assert!(
                    delay >= nominal / 2 && delay <= nominal,
                    "{retry}: {delay:?}"
                );
                assert!(delay <= BACKOFF.max);
            }
        }
        assert_eq!(BACKOFF.delay_with(1, None, 0.0), Duration::from_millis(50));
        let near_top = BACKOFF.delay_with(3, None, 0.999_999_9);
        assert!(near_top > Duration::from_millis(399) && near_top <= Duration::from_millis(400));
        assert_eq!(
            BACKOFF.delay_with(u32::MAX, None, 0.0),
            Duration::from_millis(2500)
        );
        assert!(BACKOFF.delay(30, None) >= Duration::from_millis(2500));
    }

    #[test]
    fn retry_info_is_honoured_up_to_the_ceiling() {
        let one = Some(Duration::from_secs(1));
        assert_eq!(BACKOFF.delay(1, one), Duration::from_secs(1));
        assert_eq!(
            BACKOFF.delay(1, Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn draws_spread_over_the_upper_half() {
        let delays: Vec<f64> = (0..10_000)
            .map(|_| BACKOFF.delay(1, None).as_secs_f64())
            .collect();
        assert!(delays.iter().all(|d| (0.05..=0.1).contains(d)));
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!((mean - 0.075).abs() < 0.002, "mean {mean}");
    }
}
