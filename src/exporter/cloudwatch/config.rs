//! `exporters.cloudwatch`: where derived metrics go (EMF log events or
//! PutMetricData), what they are named and how delivery behaves.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{
    DIM_CLIENT, DIM_CLUSTER_NAME, DIM_CONNECTION_TYPE, DIM_SERVER, RESERVED_DIMENSIONS,
};
use crate::exporter::aws::{AwsTarget, RetryPolicy, check_settings};
use crate::exporter::disk::DiskQueueConfig;
use crate::validate::{Invalid, Valid};

/// CloudWatch allows at most this many dimensions on one metric.
pub const MAX_DIMENSIONS: usize = 30;
/// Placeholder in `log_group` replaced by the cluster name.
pub const CLUSTER_PLACEHOLDER: &str = "{ClusterName}";
/// Cluster name used in the log group when `cluster_name` is empty.
pub const DEFAULT_CLUSTER: &str = "default";
/// Retention values CloudWatch Logs accepts (days); 0 leaves it unset.
pub const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// How metrics reach CloudWatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CloudWatchMode {
    /// Embedded Metric Format log events (PutLogEvents); CloudWatch turns
    /// them into metrics, and Logs Insights can query them.
    #[default]
    #[serde(rename = "emf")]
    Emf,
    /// The PutMetricData API.
    #[serde(rename = "putmetricdata")]
    PutMetricData,
}

impl CloudWatchMode {
    /// The `exporter` label of this mode's `tracemap_exporter_*` series.
    pub fn exporter_label(self) -> &'static str {
        match self {
            Self::Emf => "emf",
            Self::PutMetricData => "cloudwatch",
        }
    }
}

/// The CloudWatch metrics exporter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudWatchConfig {
    /// Export per-edge and per-service metrics to CloudWatch.
    pub enabled: bool,
    /// `emf` (log events, the default) or `putmetricdata`.
    pub mode: CloudWatchMode,
    /// AWS region, such as `eu-west-1`; empty means the SDK's default chain.
    pub region: String,
    /// Endpoint URL override, such as a local AWS emulator; empty means AWS.
    pub endpoint: String,
    /// IAM role to assume (through STS); empty means the default credentials.
    pub role_arn: String,
    /// Metric namespace.
    pub namespace: String,
    /// Added to every metric as the `ClusterName` dimension and used in the
    /// log group name; empty means `default`, so dashboards always find it.
    pub cluster_name: String,
    /// More dimensions added to every metric, such as `{Environment: prod}`.
    pub dimensions: BTreeMap<String, String>,
    /// Per-edge rollups: each a set of `Client`, `Server`, `ConnectionType`,
    /// exported beside the full `[Client, Server, ConnectionType]` set.
    pub rollups: Vec<Vec<String>>,
    /// Per-service RED metrics (`[Service]`), from the spans each service served.
    pub service_metrics: bool,
    /// Per-operation RED metrics (`[Service, Operation]`), from span metrics.
    pub operation_metrics: bool,
    /// Distinct dimension sets (edges, services, operations) per minute at
    /// most; the quietest beyond it fold into an `Other` set, and are counted.
    pub max_dimension_sets: usize,
    /// EMF: the log group; `{ClusterName}` is replaced by `cluster_name`
    /// (or `default`). Created if missing.
    pub log_group: String,
    /// EMF: the log stream, one per instance; empty means the host name
    /// (the pod name on Kubernetes), else `tracemap-<pid>`. Created if missing.
    pub log_stream: String,
    /// EMF: retention of a log group tracemap creates, in days (a value
    /// CloudWatch Logs accepts); 0 leaves it unset (never expire).
    pub log_retention_days: u32,
    /// How often completed minutes are exported; minutes are exported once
    /// they are over, so CloudWatch receives each minute once.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Requests (each at most 1 MB) waiting to be sent; when full the
    /// oldest is dropped and counted.
    pub max_queue: usize,
    /// Times a request is re-sent after a throttle, server error or timeout.
    pub max_retries: u32,
    /// Back-off before the first retry; it doubles for each later one, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// Longest back-off between retries.
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Time allowed for one call, connecting included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The queue: `durability`, `disk_budget`, `fsync_interval`.
    #[serde(flatten)]
    pub queue: DiskQueueConfig,
}

impl Default for CloudWatchConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: CloudWatchMode::Emf,
            region: String::new(),
            endpoint: String::new(),
            role_arn: String::new(),
            namespace: "TraceMap".into(),
            cluster_name: String::new(),
            dimensions: BTreeMap::new(),
            rollups: vec![vec![DIM_SERVER.into()], vec![DIM_CLIENT.into()]],
            service_metrics: true,
            operation_metrics: true,
            max_dimension_sets: 1000,
            log_group: format!("/aws/tracemap/{CLUSTER_PLACEHOLDER}/metrics"),
            log_stream: String::new(),
            log_retention_days: 30,
            flush_interval: Duration::from_secs(60),
            // A flush is a few requests; this rides out minutes of outage.
            max_queue: 64,
            max_retries: 5,
            retry_initial_backoff: Duration::from_millis(200),
            retry_max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            queue: DiskQueueConfig::default(),
        }
    }
}

impl CloudWatchConfig {
    /// The log group with `{ClusterName}` filled in.
    pub fn resolved_log_group(&self) -> String {
        self.log_group.replace(CLUSTER_PLACEHOLDER, self.cluster())
    }

    /// `cluster_name`, or `default` when empty.
    pub fn cluster(&self) -> &str {
        match self.cluster_name.is_empty() {
            true => DEFAULT_CLUSTER,
            false => &self.cluster_name,
        }
    }

    /// Static dimensions in the order they are appended: `ClusterName`
    /// first, then `dimensions` by name.
    pub fn static_dimensions(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.dimensions.len() + 1);
        out.push((DIM_CLUSTER_NAME.to_owned(), self.cluster().to_owned()));
        out.extend(self.dimensions.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

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

    /// Appends every broken rule under `prefix` (such as `exporters.cloudwatch`).
    /// Checked whether or not the exporter is enabled, so typos fail early.
    ///
    /// Returns the section as `start` takes it when no rule is broken.
    pub fn validate(&self, prefix: &str, invalid: &mut Vec<Invalid>) -> Option<Valid<Self>> {
        Valid::check(self, invalid, |this, invalid| this.check(prefix, invalid))
    }

    fn check(&self, prefix: &str, invalid: &mut Vec<Invalid>) {
        self.queue.check(prefix, invalid);
        let mut fail = |key: &str, reason: String| {
            invalid.push(Invalid {
                key: format!("{prefix}.{key}"),
                reason,
            });
        };
        check_settings(&self.aws_target(), &self.retry_policy(), &mut fail);
        // CloudWatch: namespaces 1-255 of [0-9A-Za-z.-_/#:], not starting with "AWS/".
        let namespace_ok = (1..=255).contains(&self.namespace.len())
            && self
                .namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_/#: ".contains(&b))
            && !self.namespace.starts_with("AWS/");
        if !namespace_ok {
            fail(
                "namespace",
                "must be 1 to 255 of letters, digits and . - _ / # : and not start with AWS/"
                    .into(),
            );
        }
        let dimension_value_ok = |v: &str| (1..=1024).contains(&v.len());
        if !self.cluster_name.is_empty() && !dimension_value_ok(&self.cluster_name) {
            fail("cluster_name", "must be at most 1024 characters".into());
        }
        for (name, value) in &self.dimensions {
            if !(1..=255).contains(&name.len()) || name.starts_with(':') {
                fail(
                    "dimensions",
                    format!("{name:?}: names are 1 to 255 characters, not starting with ':'"),
                );
            } else if RESERVED_DIMENSIONS.contains(&name.as_str()) {
                fail("dimensions", format!("{name:?} is set by tracemap itself"));
            } else if !dimension_value_ok(value) {
                fail(
                    "dimensions",
                    format!("{name:?}: values are 1 to 1024 characters"),
                );
            }
        }
        // The widest set is the edge's three plus every static one.
        let widest = 3 + self.static_dimensions().len();
        if widest > MAX_DIMENSIONS {
            fail(
                "dimensions",
                format!(
                    "{widest} dimensions per edge metric with ClusterName; CloudWatch allows {MAX_DIMENSIONS}"
                ),
            );
        }
        for rollup in &self.rollups {
            let known = [DIM_CLIENT, DIM_SERVER, DIM_CONNECTION_TYPE];
            if rollup.is_empty()
                || rollup.iter().any(|d| !known.contains(&d.as_str()))
                || rollup.len()
                    != rollup
                        .iter()
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
            {
                fail(
                    "rollups",
                    format!(
                        "{rollup:?}: each rollup is a non-empty set of Client, Server, ConnectionType"
                    ),
                );
            }
        }
        if self.rollups.len() > 8 {
            fail("rollups", "at most 8 rollups".into());
        }
        if !(1..=100_000).contains(&self.max_dimension_sets) {
            fail("max_dimension_sets", "must be 1 to 100000".into());
        }
        if self.mode == CloudWatchMode::Emf {
            let group = self.resolved_log_group();
            let group_ok = (1..=512).contains(&group.len())
                && group
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-/.#".contains(&b));
            if !group_ok {
                fail(
                    "log_group",
                    format!("{group:?}: 1 to 512 of letters, digits and _ - / . #"),
                );
            }
            if self.log_stream.len() > 512 || self.log_stream.contains([':', '*']) {
                fail(
                    "log_stream",
                    "at most 512 characters, without ':' or '*'".into(),
                );
            }
        }
        if self.log_retention_days != 0 && !RETENTION_DAYS.contains(&self.log_retention_days) {
            fail(
                "log_retention_days",
                format!("must be 0 (unset) or one of {RETENTION_DAYS:?}"),
            );
        }
        if self.flush_interval < Duration::from_secs(1) {
            fail("flush_interval", "must be at least 1s".into());
        }
        if !(1..=10_000).contains(&self.max_queue) {
            fail("max_queue", "must be 1 to 10000".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_keys(config: &CloudWatchConfig) -> Vec<String> {
        let mut invalid = Vec::new();
        config.validate("exporters.cloudwatch", &mut invalid);
        invalid.into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn defaults_are_valid_disabled_emf() {
        let config = CloudWatchConfig::default();
        assert!(!config.enabled);
        assert_eq!(config.mode, CloudWatchMode::Emf);
        assert_eq!(config.namespace, "TraceMap");
        assert_eq!(config.resolved_log_group(), "/aws/tracemap/default/metrics");
        assert!(
            invalid_keys(&config).is_empty(),
            "{:?}",
            invalid_keys(&config)
        );
    }

    #[test]
    fn parses_the_documented_shape_and_refuses_unknown_keys() {
        let config: CloudWatchConfig = serde_yaml_ng::from_str(
            "enabled: true\nmode: putmetricdata\nregion: eu-west-1\nendpoint: http://127.0.0.1:5000\n\
             namespace: Shop\ncluster_name: prod-eu\nlog_group: /x/{ClusterName}\nflush_interval: 10s\n\
             rollups: [[Server, ConnectionType]]\ndimensions: {Environment: prod}\n",
        )
        .unwrap();
        assert_eq!(config.mode, CloudWatchMode::PutMetricData);
        assert_eq!(config.resolved_log_group(), "/x/prod-eu");
        assert_eq!(
            config.static_dimensions(),
            [
                ("ClusterName".to_owned(), "prod-eu".to_owned()),
                ("Environment".to_owned(), "prod".to_owned())
            ]
        );
        assert!(invalid_keys(&config).is_empty());
        let err = serde_yaml_ng::from_str::<CloudWatchConfig>("namepsace: X\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("namepsace"), "{err}");
        let err = serde_yaml_ng::from_str::<CloudWatchConfig>("mode: statsd\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("statsd"), "{err}");
    }

    #[test]
    fn every_broken_rule_is_listed() {
        let config = CloudWatchConfig {
            region: "mars".into(),
            endpoint: "localhost:5000".into(),
            namespace: "AWS/EC2".into(),
            rollups: vec![vec!["Service".into()], vec![]],
            max_dimension_sets: 0,
            log_group: "/bad group".into(),
            log_retention_days: 2,
            flush_interval: Duration::from_millis(10),
            max_queue: 0,
            retry_max_backoff: Duration::from_millis(1),
            request_timeout: Duration::ZERO,
            ..CloudWatchConfig::default()
        };
        assert_eq!(
            invalid_keys(&config),
            [
                "exporters.cloudwatch.region",
                "exporters.cloudwatch.endpoint",
                "exporters.cloudwatch.request_timeout",
                "exporters.cloudwatch.retry_max_backoff",
                "exporters.cloudwatch.namespace",
                "exporters.cloudwatch.rollups",
                "exporters.cloudwatch.rollups",
                "exporters.cloudwatch.max_dimension_sets",
                "exporters.cloudwatch.log_group",
                "exporters.cloudwatch.log_retention_days",
                "exporters.cloudwatch.flush_interval",
                "exporters.cloudwatch.max_queue",
            ]
        );
    }

    #[test]
    fn thirty_one_dimensions_are_refused_and_reserved_names_too() {
        // 3 edge dimensions + ClusterName + 26 = 30: allowed.
        let mut config = CloudWatchConfig {
            dimensions: (0..26).map(|i| (format!("D{i:02}"), "v".into())).collect(),
            ..CloudWatchConfig::default()
        };
        assert!(invalid_keys(&config).is_empty());
        config.dimensions.insert("D26".into(), "v".into());
        assert_eq!(invalid_keys(&config), ["exporters.cloudwatch.dimensions"]);
        let config = CloudWatchConfig {
            dimensions: BTreeMap::from([("Server".into(), "x".into())]),
            ..CloudWatchConfig::default()
        };
        assert_eq!(invalid_keys(&config), ["exporters.cloudwatch.dimensions"]);
    }
}
