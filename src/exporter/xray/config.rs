//! `exporters.xray`: where and how segments are delivered, and how spans
//! are translated.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::sampling::SamplingConfig;
use super::segment::TranslateConfig;
use crate::exporter::aws::{AwsTarget, RetryPolicy, check_settings};
use crate::exporter::disk::DiskQueueConfig;
use crate::validate::{Invalid, Valid};

/// PutTraceSegments takes at most this many documents per call.
pub const MAX_BATCH_SIZE: usize = 50;

/// The X-Ray exporter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XrayConfig {
    /// Export spans to X-Ray as segment documents.
    pub enabled: bool,
    /// AWS region, such as `eu-west-1`; empty means the SDK's default chain
    /// (`AWS_REGION`, profile, instance metadata).
    pub region: String,
    /// Endpoint URL override, such as a local AWS emulator; empty means AWS.
    pub endpoint: String,
    /// IAM role to assume (through STS) with the default credentials; empty
    /// means use those credentials directly (on EKS, IRSA supplies them).
    pub role_arn: String,
    /// Span → segment translation: annotations, trace id policy.
    #[serde(flatten)]
    pub translate: TranslateConfig,
    /// Documents per PutTraceSegments call, 1 to 50.
    pub batch_size: usize,
    /// Longest a document waits for its batch to fill before it is sent anyway.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Documents waiting to be sent, over all workers; when full the oldest
    /// is dropped and counted.
    pub max_queue: usize,
    /// While X-Ray accepts segments but the queue is over half full (the
    /// exporter is slower than the intake), receivers refuse new spans with
    /// UNAVAILABLE / 503, so clients retry instead of the queue dropping;
    /// after a failed call the queue drops oldest instead.
    pub backpressure: bool,
    /// PutTraceSegments calls in flight at once.
    pub max_concurrency: usize,
    /// Times a batch (or what X-Ray left unprocessed of it) is re-sent after
    /// a throttle, server error or timeout before its documents count as failed.
    pub max_retries: u32,
    /// Back-off before the first retry; it doubles for each later one, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// Longest back-off between retries.
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Time allowed for one PutTraceSegments attempt, connecting included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The queue: `durability`, `disk_budget`, `fsync_interval`.
    #[serde(flatten)]
    pub queue: DiskQueueConfig,
    /// Tail sampling: which traces go to X-Ray.
    pub sampling: SamplingConfig,
}

impl Default for XrayConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            region: String::new(),
            endpoint: String::new(),
            role_arn: String::new(),
            translate: TranslateConfig::default(),
            batch_size: MAX_BATCH_SIZE,
            flush_interval: Duration::from_secs(1),
            // About 1 KiB a document: ~20 MiB, within a node agent's budget.
            max_queue: 20_000,
            backpressure: true,
            max_concurrency: 4,
            max_retries: 5,
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            queue: DiskQueueConfig::default(),
            sampling: SamplingConfig::default(),
        }
    }
}

impl XrayConfig {
    /// Where and how this exporter reaches AWS.
    pub(crate) fn aws_target(&self) -> AwsTarget<'_> {
        AwsTarget {
            region: &self.region,
            endpoint: &self.endpoint,
            role_arn: &self.role_arn,
            request_timeout: self.request_timeout,
        }
    }

    /// The retry settings as one policy.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            backoff: crate::exporter::backoff::Backoff {
                initial: self.retry_initial_backoff,
                max: self.retry_max_backoff,
            },
        }
    }

    /// Appends every broken rule under `prefix` (such as `exporters.xray`).
    /// Checked whether or not the exporter is enabled, so typos fail early.
    ///
    /// Returns the section as `start` takes it when no rule is broken.
    pub fn validate(&self, prefix: &str, invalid: &mut Vec<Invalid>) -> Option<Valid<Self>> {
        Valid::check(self, invalid, |this, invalid| this.check(prefix, invalid))
    }

    fn check(&self, prefix: &str, invalid: &mut Vec<Invalid>) {
        self.queue.check(prefix, invalid);
        self.sampling.check(&format!("{prefix}.sampling"), invalid);
        let mut fail = |key: &str, reason: String| {
            invalid.push(Invalid {
                key: format!("{prefix}.{key}"),
                reason,
            });
        };
        check_settings(&self.aws_target(), &self.retry_policy(), &mut fail);
        if let Some(key) = self
            .translate
            .indexed_attributes
            .iter()
            .find(|k| k.is_empty())
        {
            fail(
                "indexed_attributes",
                format!("{key:?}: keys must not be empty"),
            );
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            fail(
                "batch_size",
                format!("must be 1 to {MAX_BATCH_SIZE} (PutTraceSegments' limit)"),
            );
        }
        if self.flush_interval.is_zero() {
            fail("flush_interval", "must be greater than zero".into());
        }
        if self.max_queue < self.batch_size.max(1) {
            fail(
                "max_queue",
                "must hold at least one batch (batch_size)".into(),
            );
        }
        if !(1..=256).contains(&self.max_concurrency) {
            fail("max_concurrency", "must be 1 to 256".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_keys(config: &XrayConfig) -> Vec<String> {
        let mut invalid = Vec::new();
        config.validate("exporters.xray", &mut invalid);
        invalid.into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn defaults_are_valid_and_disabled() {
        let config = XrayConfig::default();
        assert!(!config.enabled);
        assert_eq!(config.batch_size, 50);
        assert!(invalid_keys(&config).is_empty());
    }

    #[test]
    fn batch_size_must_be_1_to_50() {
        for (size, ok) in [(0, false), (1, true), (50, true), (51, false)] {
            let config = XrayConfig {
                batch_size: size,
                ..XrayConfig::default()
            };
            let keys = invalid_keys(&config);
            assert_eq!(keys.is_empty(), ok, "batch_size {size}: {keys:?}");
            if !ok {
                assert_eq!(keys, ["exporters.xray.batch_size"]);
            }
        }
    }

    #[test]
    fn regions_are_checked() {
        for region in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-north-1",
            "us-isob-east-1",
        ] {
            let config = XrayConfig {
                region: region.into(),
                ..XrayConfig::default()
            };
            assert!(invalid_keys(&config).is_empty(), "{region}");
        }
        for region in [
            "useast1",
            "US-EAST-1",
            "us-east-",
            "us--1",
            "-east-1",
            "us-east-1a",
            "u-east-1",
        ] {
            let config = XrayConfig {
                region: region.into(),
                ..XrayConfig::default()
            };
            assert_eq!(invalid_keys(&config), ["exporters.xray.region"], "{region}");
        }
    }

    #[test]
    fn endpoints_are_checked() {
        for endpoint in [
            "http://127.0.0.1:5000",
            "https://xray.eu-west-1.amazonaws.com",
        ] {
            let config = XrayConfig {
                endpoint: endpoint.into(),
                ..XrayConfig::default()
            };
            assert!(invalid_keys(&config).is_empty(), "{endpoint}");
        }
        for endpoint in ["127.0.0.1:5000", "ftp://host", "http://", "not a url"] {
            let config = XrayConfig {
                endpoint: endpoint.into(),
                ..XrayConfig::default()
            };
            assert_eq!(
                invalid_keys(&config),
                ["exporters.xray.endpoint"],
                "{endpoint}"
            );
        }
    }

    #[test]
    fn role_arns_are_checked() {
        let ok = XrayConfig {
            role_arn: "arn:aws:iam::123456789012:role/team/tracemap".into(),
            ..XrayConfig::default()
        };
        assert!(invalid_keys(&ok).is_empty());
        for arn in [
            "tracemap",
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:s3:::bucket",
        ] {
            let config = XrayConfig {
                role_arn: arn.into(),
                ..XrayConfig::default()
            };
            assert_eq!(invalid_keys(&config), ["exporters.xray.role_arn"], "{arn}");
        }
    }

    #[test]
    fn every_broken_rule_is_listed() {
        let config = XrayConfig {
            flush_interval: Duration::ZERO,
            max_queue: 10,
            max_concurrency: 0,
            max_retries: 1000,
            retry_initial_backoff: Duration::from_secs(2),
            retry_max_backoff: Duration::from_secs(1),
            request_timeout: Duration::ZERO,
            ..XrayConfig::default()
        };
        assert_eq!(
            invalid_keys(&config),
            [
                "exporters.xray.request_timeout",
                "exporters.xray.max_retries",
                "exporters.xray.retry_max_backoff",
                "exporters.xray.flush_interval",
                "exporters.xray.max_queue",
                "exporters.xray.max_concurrency",
            ]
        );
    }

    #[test]
    fn translation_keys_sit_beside_delivery_keys() {
        let config: XrayConfig = serde_yaml_ng::from_str(
            "enabled: true\nregion: eu-west-1\nindexed_attributes: [customer.tier]\nbatch_size: 10\nflush_interval: 250ms\n",
        )
        .unwrap();
        assert!(config.enabled);
        assert_eq!(config.translate.indexed_attributes, ["customer.tier"]);
        assert_eq!(config.batch_size, 10);
        assert_eq!(config.flush_interval, Duration::from_millis(250));
        let err = serde_yaml_ng::from_str::<XrayConfig>("batch_sise: 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_sise"), "{err}");
    }
}
