//! Where receivers hand decoded spans. The receiver owns the contract and
//! the pipeline implements it, so dependencies point the way spans flow.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::model::Span;

/// Why a sink did not take a request's spans; receivers answer
/// UNAVAILABLE / 503 so clients retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Every queue slot stayed taken for the whole enqueue timeout.
    #[error("pipeline queue is full, retry after {retry_after:?}")]
    Full {
        /// Suggested client back-off.
        retry_after: Duration,
    },
    /// The process is near `pipeline.memory_limit`; spans are taken again
    /// once memory is back under it.
    #[error("collector is at its memory limit, retry after {retry_after:?}")]
    MemoryLimit {
        /// Suggested client back-off.
        retry_after: Duration,
    },
    /// The collector is shutting down and takes no more spans.
    #[error("collector is shutting down")]
    Closed,
}

impl Refusal {
    /// The back-off to send with the refusal (gRPC `RetryInfo`, HTTP
    /// `Retry-After`); none when retrying here is pointless (shutting down).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Full { retry_after } | Self::MemoryLimit { retry_after } => Some(*retry_after),
            Self::Closed => None,
        }
    }
}

/// The future [`SpanSink::submit`] returns; boxed once per request (not per
/// span) so receivers hold the sink as a trait object.
pub type Submission<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;

/// Takes a request's spans all or nothing: either every span is queued or
/// none is, so a refused request can be retried whole.
pub trait SpanSink: Send + Sync + 'static {
    /// Queues `spans` or says why not.
    fn submit(&self, spans: Vec<Span>) -> Submission<'_>;

    /// The refusal any request would get now, whatever it holds (the
    /// memory limit): receivers ask before reading a body, so a refused
    /// request costs no memory. Never waits.
    fn refuses_now(&self) -> Option<Refusal> {
        None
    }
}

/// A sink shared by every receiver.
pub type SharedSink = Arc<dyn SpanSink>;
