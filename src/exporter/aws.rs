//! What every AWS exporter shares: the SDK configuration (default
//! credential and region chains, endpoint override, an assumed role,
//! timeouts, the SDK's retries off), our own retry back-off, a rate limit
//! for repeated warnings, and the checks of region, endpoint and role
//! settings.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use tokio::time::Instant;

use super::backoff::Backoff;

/// Where and how an exporter reaches AWS.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AwsTarget<'a> {
    /// Region override; empty means the SDK's default chain.
    pub(crate) region: &'a str,
    /// Endpoint URL override (a local emulator); empty means AWS.
    pub(crate) endpoint: &'a str,
    /// Role to assume through STS; empty means the default credentials.
    pub(crate) role_arn: &'a str,
    /// Time allowed for one attempt, connecting included.
    pub(crate) request_timeout: Duration,
}

/// The loaded SDK configuration, ready for any service client.
pub(crate) struct LoadedAws {
    /// Region, endpoint, credentials, timeouts, retries off.
    pub(crate) shared: aws_config::SdkConfig,
    /// Credentials of `role_arn`, when one is set.
    pub(crate) role: Option<AssumeRoleProvider>,
    /// The region calls go to.
    pub(crate) region: String,
}

impl AwsTarget<'_> {
    /// Loads the default chains, overridden where set; `None` when no
    /// region is configured anywhere.
    pub(crate) async fn load(&self) -> Option<LoadedAws> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.request_timeout.min(Duration::from_secs(3)))
            .operation_attempt_timeout(self.request_timeout)
            .operation_timeout(self.request_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // One attempt per call: the sender retries and counts.
            .retry_config(RetryConfig::disabled())
            // The attempt timeout already bounds a stalled call; the guard
            // wraps every body in timers, a cost per call for nothing here.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(timeouts);
        if !self.region.is_empty() {
            loader = loader.region(aws_config::Region::new(self.region.to_owned()));
        }
        if !self.endpoint.is_empty() {
            loader = loader.endpoint_url(self.endpoint);
        }
        let shared = loader.load().await;
        let region = shared.region()?.to_string();
        let role = match self.role_arn.is_empty() {
            true => None,
            false => Some(
                AssumeRoleProvider::builder(self.role_arn)
                    .session_name("tracemap")
                    .configure(&shared)
                    .build()
                    .await,
            ),
        };
        Some(LoadedAws {
            shared,
            role,
            region,
        })
    }
}

/// The attempt bound and the back-off between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
}

/// Rate-limits a warning that could repeat for every batch of an outage.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    last: std::sync::Mutex<Option<Instant>>,
    every: Duration,
}

impl WarnLimiter {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            last: std::sync::Mutex::new(None),
            every,
        }
    }

    pub(crate) fn allow(&self) -> bool {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Checks the settings every AWS exporter has, under the same keys:
/// `region`, `endpoint`, `role_arn`, `request_timeout`, `max_retries`,
/// `retry_initial_backoff` and `retry_max_backoff`.
pub(crate) fn check_settings(
    target: &AwsTarget<'_>,
    retry: &RetryPolicy,
    fail: &mut dyn FnMut(&str, String),
) {
    if !target.region.is_empty() && !is_region(target.region) {
        fail(
            "region",
            format!(
                "{:?} is not an AWS region name such as us-east-1",
                target.region
            ),
        );
    }
    if !target.endpoint.is_empty()
        && let Err(reason) = check_endpoint(target.endpoint)
    {
        fail("endpoint", reason);
    }
    if !target.role_arn.is_empty() && !is_role_arn(target.role_arn) {
        fail(
            "role_arn",
            format!(
                "{:?} is not an IAM role ARN such as arn:aws:iam::123456789012:role/tracemap",
                target.role_arn
            ),
        );
    }
    if target.request_timeout.is_zero() {
        fail("request_timeout", "must be greater than zero".into());
    }
    if retry.max_retries > 100 {
        fail("max_retries", "must be at most 100".into());
    }
    if retry.backoff.initial.is_zero() {
        fail("retry_initial_backoff", "must be greater than zero".into());
    }
    if retry.backoff.max < retry.backoff.initial {
        fail(
            "retry_max_backoff",
            "must be at least retry_initial_backoff".into(),
        );
    }
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, `eu-central-2`, `us-isob-east-1`:
/// lowercase words joined by `-`, the first of two letters, the last a number.
pub(crate) fn is_region(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return false;
    };
    first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && !middle.is_empty()
        && middle
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn check_endpoint(text: &str) -> Result<(), String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{text:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(())
}

/// `arn:<partition>:iam::<12-digit account>:role/<path/name>`.
pub(crate) fn is_role_arn(text: &str) -> bool {
    let mut parts = text.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    partition.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource
            .strip_prefix("role/")
            .is_some_and(|name| !name.is_empty())
}
