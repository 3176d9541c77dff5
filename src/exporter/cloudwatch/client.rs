//! Delivery: the two sinks (PutLogEvents for EMF, PutMetricData) over the
//! AWS SDK, and the sender that takes requests off the bounded queue one
//! at a time, retrying with back-off.
//!
//! One request is in flight at a time: EMF events must reach their log
//! stream in order, and a flush is a handful of requests anyway. Calls
//! are spaced at least [`MIN_CALL_SPACING`] apart, within PutLogEvents'
//! per-stream rate of 5 requests a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_cloudwatch::config::http::HttpResponse;
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_sdk_cloudwatch::error::SdkError;
use tokio_util::sync::CancellationToken;

use super::emf::LogEvent;
use super::pmd::PutMetricDataInput;
use super::{CloudWatchConfig, CloudWatchError, Payload, RequestQueue};
use crate::exporter::aws::{LoadedAws, RetryPolicy, WarnLimiter};

/// Shortest time between two calls.
pub const MIN_CALL_SPACING: Duration = Duration::from_millis(200);

/// One call of a sink; the SDK in production, fakes in unit tests.
pub trait Sink: Send + Sync + 'static {
    /// Sends one request; returns how many of its items were refused
    /// individually (PutLogEvents' rejected events), or why it failed.
    fn send(&self, payload: &Payload) -> impl Future<Output = Result<u64, CloudWatchError>> + Send;
}

/// Whether an error is worth a retry: throttling, server errors,
/// timeouts, connection failures.
fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> CloudWatchError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let throttled = code.as_deref().is_some_and(|c| {
        matches!(
            c,
            "Throttling"
                | "ThrottlingException"
                | "ServiceUnavailable"
                | "ServiceUnavailableException"
        )
    });
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            throttled || status.is_some_and(|s| s == 429 || s >= 500)
        }
        _ => false,
    };
    CloudWatchError::Call {
        operation,
        retryable,
        status,
        code,
        message: aws_sdk_cloudwatch::error::DisplayErrorContext(&err).to_string(),
    }
}

async fn load(config: &CloudWatchConfig) -> Result<LoadedAws, CloudWatchError> {
    config
        .aws_target()
        .load()
        .await
        .ok_or(CloudWatchError::NoRegion)
}

/// EMF log events through `aws-sdk-cloudwatchlogs`; creates the group
/// (with its retention) and the stream when missing.
#[derive(Debug)]
pub struct EmfSink {
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    retention_days: u32,
    /// Group and stream exist (as far as we know).
    ready: AtomicBool,
}

impl EmfSink {
    /// Builds the client from the default chains and the overrides.
    pub async fn connect(
        config: &CloudWatchConfig,
        stream: String,
    ) -> Result<(Self, String), CloudWatchError> {
        let loaded = load(config).await?;
        let mut builder = aws_sdk_cloudwatchlogs::config::Builder::from(&loaded.shared);
        if let Some(role) = loaded.role {
            builder = builder.credentials_provider(role);
        }
        let sink = Self {
            client: aws_sdk_cloudwatchlogs::Client::from_conf(builder.build()),
            group: config.resolved_log_group(),
            stream,
            retention_days: config.log_retention_days,
            ready: AtomicBool::new(false),
        };
        Ok((sink, loaded.region))
    }

    async fn ensure_destination(&self) -> Result<(), CloudWatchError> {
        if self.ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self
            .client
            .create_log_group()
            .log_group_name(&self.group)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(
                    exporter = "emf",
                    log_group = self.group,
                    "log group created"
                );
                // Only on a group we created: an existing group keeps the
                // retention its owner chose.
                if self.retention_days > 0 {
                    self.client
                        .put_retention_policy()
                        .log_group_name(&self.group)
                        .retention_in_days(self.retention_days as i32)
                        .send()
                        .await
                        .map_err(|e| classify("PutRetentionPolicy", e))?;
                }
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) => {}
            Err(err) => return Err(classify("CreateLogGroup", err)),
        }
        match self
            .client
            .create_log_stream()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .send()
            .await
        {
            Ok(_) => {}
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) => {}
            Err(err) => return Err(classify("CreateLogStream", err)),
        }
        self.ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn put(&self, events: &[LogEvent]) -> Result<u64, CloudWatchError> {
        self.ensure_destination().await?;
        let events: Vec<_> = events
            .iter()
            .map(|e| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(e.timestamp_ms)
                    .message(&e.message)
                    .build()
                    .expect("timestamp and message are set")
            })
            .collect();
        let output = self
            .client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events.clone()))
            .send()
            .await
            .map_err(|err| {
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception())
                {
                    // Deleted under us: create it again on the retry.
                    self.ready.store(false, Ordering::Relaxed);
                    let mut err = classify("PutLogEvents", err);
                    if let CloudWatchError::Call { retryable, .. } = &mut err {
                        *retryable = true;
                    }
                    return err;
                }
                classify("PutLogEvents", err)
            })?;
        Ok(output.rejected_log_events_info().map_or(0, |info| {
            // Events before `too_new_start` that are too old or expired,
            // and from it on too new.
            let len = events.len() as i32;
            let too_old = info
                .too_old_log_event_end_index()
                .max(info.expired_log_event_end_index())
                .unwrap_or(-1)
                + 1;
            let too_new = info
                .too_new_log_event_start_index()
                .map_or(0, |start| len - start);
            (too_old.clamp(0, len) + too_new.clamp(0, len)).min(len) as u64
        }))
    }
}

impl Sink for EmfSink {
    async fn send(&self, payload: &Payload) -> Result<u64, CloudWatchError> {
        match payload {
            Payload::Events(events) => self.put(events).await,
            Payload::Metrics(_) => unreachable!("the emf sink is only given events"),
        }
    }
}

/// PutMetricData through `aws-sdk-cloudwatch` (query protocol, gzip for
/// bodies of 10 KiB and more, both the SDK's defaults).
#[derive(Debug)]
pub struct PmdSink {
    client: aws_sdk_cloudwatch::Client,
}

impl PmdSink {
    /// Builds the client from the default chains and the overrides.
    pub async fn connect(config: &CloudWatchConfig) -> Result<(Self, String), CloudWatchError> {
        let loaded = load(config).await?;
        let mut builder = aws_sdk_cloudwatch::config::Builder::from(&loaded.shared);
        if let Some(role) = loaded.role {
            builder = builder.credentials_provider(role);
        }
        let sink = Self {
            client: aws_sdk_cloudwatch::Client::from_conf(builder.build()),
        };
        Ok((sink, loaded.region))
    }

    async fn put(&self, input: &PutMetricDataInput) -> Result<u64, CloudWatchError> {
        use aws_sdk_cloudwatch::primitives::DateTime;
        use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
        let data: Vec<MetricDatum> = input
            .data
            .iter()
            .map(|d| {
                let dimensions = d
                    .dimensions
                    .iter()
                    .map(|(name, value)| Dimension::builder().name(name).value(value).build())
                    .collect();
                let mut datum = MetricDatum::builder()
                    .metric_name(&d.name)
                    .set_dimensions(Some(dimensions))
                    .timestamp(DateTime::from_millis(d.timestamp_ms))
                    .unit(StandardUnit::from(d.unit.as_str()))
                    .storage_resolution(60)
                    .set_value(d.value);
                if !d.values.is_empty() {
                    datum = datum
                        .set_values(Some(d.values.clone()))
                        .set_counts(Some(d.counts.clone()));
                }
                datum.build()
            })
            .collect();
        self.client
            .put_metric_data()
            .namespace(&input.namespace)
            .set_metric_data(Some(data))
            .send()
            .await
            .map_err(|e| classify("PutMetricData", e))?;
        Ok(0)
    }
}

impl Sink for PmdSink {
    async fn send(&self, payload: &Payload) -> Result<u64, CloudWatchError> {
        match payload {
            Payload::Metrics(input) => self.put(input).await,
            Payload::Events(_) => unreachable!("the putmetricdata sink is only given metrics"),
        }
    }
}

/// The sender task: one request at a time, in queue order.
pub(crate) struct Sender<S> {
    pub(crate) sink: S,
    pub(crate) queue: Arc<RequestQueue>,
    pub(crate) retry: RetryPolicy,
    pub(crate) warn: WarnLimiter,
}

impl<S: Sink> Sender<S> {
    /// Sends what is queued whenever woken; after `stop`, sends what is
    /// left and returns (the owner aborts it at the shutdown deadline).
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut last_call: Option<tokio::time::Instant> = None;
        loop {
            while let Some((payload, ticket)) = self.queue.pop() {
                if !self.deliver(&payload, &mut last_call, &stop).await {
                    // Stopping with the endpoint failing: the request and
                    // those after it stay on disk for the next start.
                    return;
                }
                self.queue.finish(payload.items() as u64, ticket);
            }
            if stop.is_cancelled() {
                // The producer pushed its last flush before cancelling.
                if self.queue.is_empty() {
                    return;
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = self.queue.ready() => {}
            }
        }
    }

    /// Sends `payload` until done (sent, or failed and counted); false
    /// when it is left unsent on disk because of `stop`.
    async fn deliver(
        &self,
        payload: &Payload,
        last_call: &mut Option<tokio::time::Instant>,
        stop: &CancellationToken,
    ) -> bool {
        let counters = self.queue.counters();
        let items = payload.items() as u64;
        let mut retries = 0u32;
        loop {
            if let Some(at) = *last_call {
                tokio::time::sleep_until(at + MIN_CALL_SPACING).await;
            }
            *last_call = Some(tokio::time::Instant::now());
            let err = match self.sink.send(payload).await {
                Ok(rejected) => {
                    counters.sent.inc_by(items - rejected.min(items));
                    if rejected > 0 {
                        counters.failed_rejected.inc_by(rejected);
                        self.warn_failure(rejected, "events rejected as too old or too new");
                    }
                    return true;
                }
                Err(err) => err,
            };
            if !err.is_retryable() {
                counters.failed_rejected.inc_by(items);
                self.warn_failure(items, &err.to_string());
                return true;
            }
            // From disk: retried until delivered; a shutdown leaves it there.
            let durable = self.queue.is_durable();
            if durable && stop.is_cancelled() {
                return false;
            }
            if retries >= self.retry.max_retries && !durable {
                counters.failed_retries_exhausted.inc_by(items);
                self.warn_failure(items, &err.to_string());
                return true;
            }
            retries += 1;
            counters.retries.inc_by(items);
            tracing::debug!(exporter = self.queue.exporter(), retry = retries, error = %err, "cloudwatch retry");
            tokio::time::sleep(self.retry.backoff.delay(retries, None)).await;
        }
    }

    fn warn_failure(&self, items: u64, why: &str) {
        if self.warn.allow() {
            tracing::warn!(
                exporter = self.queue.exporter(),
                items,
                error = why,
                "cloudwatch metrics not delivered; counted in tracemap_exporter_failed_total, further failures within 30s only counted"
            );
        }
    }
}
