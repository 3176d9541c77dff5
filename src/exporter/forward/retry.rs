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

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
    use tonic_types::ErrorDetails;

    use super::*;

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
