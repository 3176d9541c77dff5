//! What to do after an export attempt: the outcome of a gRPC call, and the
//! backoff before the next try. Pure, so the policy is tested without a
//! network.

use std::error::Error as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::Code;
use tonic_types::StatusExt as _;

/// Why an attempt failed, as the `reason` label of
/// `tracemap_exporter_failed_total`.
pub mod failure {
    /// No connection: refused, reset, timed out connecting, name not found.
    pub const UNREACHABLE: &str = "unreachable";
    /// No answer within `timeout`.
    pub const TIMEOUT: &str = "timeout";
    /// The gateway answered UNAVAILABLE (busy or shutting down) or another
    /// code the OTLP spec calls retryable.
    pub const UNAVAILABLE: &str = "unavailable";
    /// The gateway answered RESOURCE_EXHAUSTED with a `RetryInfo`.
    pub const THROTTLED: &str = "throttled";
    /// The gateway refused the request for good.
    pub const REJECTED: &str = "rejected";
    /// Every reason, for creating the series up front.
    pub const ALL: [&str; 5] = [UNREACHABLE, TIMEOUT, UNAVAILABLE, THROTTLED, REJECTED];
}

/// An export call's result before classification.
#[derive(Debug)]
pub enum Attempt {
    /// The gateway answered OK.
    Ok(ExportTraceServiceResponse),
    /// The gateway answered with a status, or the transport failed.
    Status(tonic::Status),
    /// Our own deadline passed first.
    Timeout,
}

/// What the sender does next with the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; the gateway refused `rejected` spans of it for good
    /// (`partial_success`).
    Sent {
        /// Spans the gateway rejected.
        rejected: u64,
    },
    /// The gateway cannot be reached: mark it down and fail its traces
    /// over; the batch is retried only where failover has no room.
    Unreachable,
    /// Try the same gateway again after a backoff, or after `after` when
    /// the gateway said so in `RetryInfo`.
    Retry {
        /// The `failure` reason.
        reason: &'static str,
        /// The gateway's `RetryInfo` delay.
        after: Option<Duration>,
    },
    /// Retrying cannot help: drop the batch, counted.
    Permanent,
}

impl Outcome {
    /// Classifies an attempt the way the OTLP specification asks: its
    /// retryable codes are retried, RESOURCE_EXHAUSTED only with a
    /// `RetryInfo` (without one it means "too large", which a retry
    /// cannot fix), transport failures fail over.
    pub fn of(attempt: &Attempt, spans: usize) -> Self {
        let status = match attempt {
            Attempt::Ok(response) => {
                let rejected = response
                    .partial_success
                    .as_ref()
                    .map_or(0, |p| p.rejected_spans.clamp(0, spans as i64) as u64);
                return Self::Sent { rejected };
            }
            Attempt::Timeout => {
                return Self::Retry {
                    reason: failure::TIMEOUT,
                    after: None,
                };
            }
            Attempt::Status(status) => status,
        };
        // A status the client made from a transport error (refused,
        // reset, name not found, connection lost mid-request) carries that
        // error as its source; one the gateway sent has none.
        if status.source().is_some() {
            return Self::Unreachable;
        }
        let after = status.get_details_retry_info().and_then(|i| i.retry_delay);
        match status.code() {
            Code::Unavailable
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::DataLoss => Self::Retry {
                reason: failure::UNAVAILABLE,
                after,
            },
            Code::ResourceExhausted if after.is_some() => Self::Retry {
                reason: failure::THROTTLED,
                after,
            },
            _ => Self::Permanent,
        }
    }
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Before the first retry (before jitter).
    pub initial: Duration,
    /// The ceiling, also applied to a gateway's `RetryInfo` delay.
    pub max: Duration,
}

impl Backoff {
    /// Delay before retry number `retry` (1 for the first): the gateway's
    /// `RetryInfo` delay when it sent one, else `initial · 2^(retry-1)`
    /// with "equal jitter" (a uniform draw from its upper half, so agents
    /// that failed together do not retry together yet every wait is at
    /// least half the nominal one); never above `max`. `jitter` is in
    /// `[0, 1)`.
    pub fn delay(&self, retry: u32, retry_info: Option<Duration>, jitter: f64) -> Duration {
        if let Some(after) = retry_info {
            return after.min(self.max);
        }
        let exponent = retry.saturating_sub(1).min(31);
        let nominal = self.initial.saturating_mul(1 << exponent).min(self.max);
        nominal.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A small, fast generator for jitter (splitmix64); not for secrets.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from `seed` and the clock, so agents started together differ.
    pub fn new(seed: u64) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self(seed ^ now ^ u64::from(std::process::id()).rotate_left(32))
    }

    /// The next draw in `[0, 1)`.
    pub fn draw(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
    use tonic_types::ErrorDetails;

    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_is_capped() {
        let mut jitter = Jitter::new(7);
        for retry in 1..=40u32 {
            let nominal = Duration::from_millis(100)
                .saturating_mul(1 << (retry - 1).min(31))
                .min(Duration::from_secs(5));
            for _ in 0..200 {
                let delay = BACKOFF.delay(retry, None, jitter.draw());
                assert!(
                    delay >= nominal / 2 && delay <= nominal,
                    "{retry}: {delay:?}"
                );
                assert!(delay <= BACKOFF.max);
            }
        }
        assert_eq!(BACKOFF.delay(1, None, 0.0), Duration::from_millis(50));
        let near_top = BACKOFF.delay(3, None, 0.999_999_9);
        assert!(near_top > Duration::from_millis(399) && near_top <= Duration::from_millis(400));
        assert_eq!(
            BACKOFF.delay(u32::MAX, None, 0.0),
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn retry_info_is_honoured_up_to_the_ceiling() {
        let one = Some(Duration::from_secs(1));
        assert_eq!(BACKOFF.delay(1, one, 0.3), Duration::from_secs(1));
        assert_eq!(
            BACKOFF.delay(1, Some(Duration::from_secs(60)), 0.3),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn jitter_is_uniform_enough() {
        let mut jitter = Jitter::new(1);
        let draws: Vec<f64> = (0..10_000).map(|_| jitter.draw()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    fn status(code: Code, retry: Option<Duration>) -> Attempt {
        Attempt::Status(match retry {
            Some(delay) => tonic::Status::with_error_details(
                code,
                "busy",
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            None => tonic::Status::new(code, "no"),
        })
    }

    #[test]
    fn outcomes_follow_the_otlp_retry_rules() {
        let second = Some(Duration::from_secs(1));
        assert_eq!(
            Outcome::of(&status(Code::Unavailable, second), 10),
            Outcome::Retry {
                reason: failure::UNAVAILABLE,
                after: second
            }
        );
        assert_eq!(
            Outcome::of(&status(Code::ResourceExhausted, second), 10),
            Outcome::Retry {
                reason: failure::THROTTLED,
                after: second
            }
        );
        assert_eq!(
            Outcome::of(&status(Code::ResourceExhausted, None), 10),
            Outcome::Permanent
        );
        assert_eq!(
            Outcome::of(&status(Code::InvalidArgument, None), 10),
            Outcome::Permanent
        );
        assert_eq!(
            Outcome::of(&status(Code::DeadlineExceeded, None), 10),
            Outcome::Retry {
                reason: failure::UNAVAILABLE,
                after: None
            }
        );
        assert_eq!(
            Outcome::of(&Attempt::Timeout, 10),
            Outcome::Retry {
                reason: failure::TIMEOUT,
                after: None
            }
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let transport = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(transport.code(), Code::Unavailable);
        assert_eq!(
            Outcome::of(&Attempt::Status(transport), 10),
            Outcome::Unreachable
        );
        // A connection lost mid-request: tonic says UNKNOWN, with the cause.
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let lost = tonic::Status::from_error(Box::new(reset));
        assert_eq!(lost.code(), Code::Unknown);
        assert_eq!(
            Outcome::of(&Attempt::Status(lost), 10),
            Outcome::Unreachable
        );
        assert_eq!(
            Outcome::of(&status(Code::Unknown, None), 10),
            Outcome::Permanent
        );
        let partial = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 99,
                error_message: "bad ids".into(),
            }),
        };
        assert_eq!(
            Outcome::of(&Attempt::Ok(partial), 10),
            Outcome::Sent { rejected: 10 }
        );
        assert_eq!(
            Outcome::of(&Attempt::Ok(ExportTraceServiceResponse::default()), 10),
            Outcome::Sent { rejected: 0 }
        );
    }
}
