//! `exporters.forward`: where an agent sends its spans, and how hard it tries.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exporter::disk::DiskQueueConfig;
use crate::validate::{Invalid, Valid};

/// Most gateways an agent spreads traces over; bounds the per-gateway
/// queues, tasks and metric series.
pub const MAX_GATEWAYS: usize = 256;

/// Agent-mode forwarding to gateways (`mode: agent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Static gateways, each `host:port` of an OTLP/gRPC receiver. Every
    /// agent must list the same set (order does not matter).
    pub endpoints: Vec<String>,
    /// A DNS name and port, `name:port`, whose addresses are the gateways,
    /// such as a Kubernetes headless Service; instead of `endpoints`.
    pub dns: String,
    /// How often `dns` is resolved again.
    #[serde(with = "humantime_serde")]
    pub dns_refresh: Duration,
    /// Spans each gateway's queue holds, queued and in flight. When a
    /// gateway's queue is full, receivers refuse requests (UNAVAILABLE / 503)
    /// after `pipeline.enqueue_timeout`, and the senders retry.
    pub queue_size: usize,
    /// Most spans in one export request.
    pub max_batch: usize,
    /// Longest a span waits for its batch to fill.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Largest export request in bytes; bigger batches are split. Keep it
    /// at or below the gateways' `receivers.otlp.grpc.max_recv_msg_bytes`.
    pub max_request_bytes: usize,
    /// Retries of one batch before its spans are dropped (and counted).
    pub max_retries: u32,
    /// Backoff before the first retry; it doubles with each retry, with
    /// jitter, up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest backoff, also the cap on a gateway's `RetryInfo` delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Time allowed for one export request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Time allowed for a connection to a gateway; after it the gateway
    /// counts as down and its traces fail over.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Also build this agent's own service graph (for the node's view);
    /// without it an agent only forwards.
    pub keep_local_graph: bool,
    /// The queue: `durability`, `disk_budget`, `fsync_interval`. With
    /// `disk` (the default when `storage.enabled`) each gateway's export
    /// requests are written to `<data_dir>/queue/forward-<gateway>` before
    /// the client is answered; `disk_budget` applies to each gateway's queue.
    #[serde(flatten)]
    pub queue: DiskQueueConfig,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            dns: String::new(),
            dns_refresh: Duration::from_secs(30),
            queue_size: 20_000,
            max_batch: 512,
            flush_interval: Duration::from_millis(200),
            max_request_bytes: 4 * 1024 * 1024,
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            keep_local_graph: false,
            queue: DiskQueueConfig::default(),
        }
    }
}

/// Largest `max_batch`: one batch is encoded on the async runtime, so it
/// must stay a short piece of work.
const MAX_BATCH_LIMIT: usize = 16_384;
/// Smallest `max_request_bytes` that still fits a realistic span.
const MIN_REQUEST_BYTES: usize = 1024;

impl ForwardConfig {
    /// Whether any gateway source is set.
    pub fn has_gateways(&self) -> bool {
        !self.endpoints.is_empty() || !self.dns.is_empty()
    }

    /// The section checked as `Config::validate` checks it; panics naming
    /// the problems (tests).
    #[cfg(test)]
    pub(crate) fn checked(self) -> Valid<Self> {
        crate::validate::section(|problems| self.validate("exporters.forward", true, problems))
            .unwrap_or_else(|problems| panic!("invalid ForwardConfig: {problems:?}"))
    }

    /// Checks the settings; `agent` says whether forwarding is in use, which
    /// makes a gateway source mandatory.
    ///
    /// Returns the section as `start` takes it when no rule is broken.
    pub fn validate(
        &self,
        prefix: &str,
        agent: bool,
        invalid: &mut Vec<Invalid>,
    ) -> Option<Valid<Self>> {
        Valid::check(self, invalid, |this, invalid| {
            this.check(prefix, agent, invalid)
        })
    }

    fn check(&self, prefix: &str, agent: bool, invalid: &mut Vec<Invalid>) {
        let mut push = |key: &str, reason: String| {
            invalid.push(Invalid {
                key: format!("{prefix}.{key}"),
                reason,
            });
        };
        if !agent {
            if self.has_gateways() || self.keep_local_graph {
                push(
                    if self.dns.is_empty() {
                        "endpoints"
                    } else {
                        "dns"
                    },
                    "only used with mode: agent".into(),
                );
            }
            return;
        }
        match (self.endpoints.is_empty(), self.dns.is_empty()) {
            (true, true) => push(
                "endpoints",
                format!("mode agent needs gateways: set {prefix}.endpoints or {prefix}.dns"),
            ),
            (false, false) => push("dns", "set endpoints or dns, not both".into()),
            _ => {}
        }
        if self.endpoints.len() > MAX_GATEWAYS {
            push("endpoints", format!("at most {MAX_GATEWAYS} gateways"));
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if let Err(reason) = parse_host_port(endpoint) {
                push(&format!("endpoints[{i}]"), reason);
            } else if self.endpoints[..i].contains(endpoint) {
                push(
                    &format!("endpoints[{i}]"),
                    format!("{endpoint} is listed twice"),
                );
            }
        }
        if !self.dns.is_empty()
            && let Err(reason) = parse_host_port(&self.dns)
        {
            push("dns", reason);
        }
        if self.dns_refresh < Duration::from_secs(1) {
            push("dns_refresh", "must be at least 1s".into());
        }
        if self.max_batch == 0 || self.max_batch > MAX_BATCH_LIMIT {
            push(
                "max_batch",
                format!("must be between 1 and {MAX_BATCH_LIMIT}"),
            );
        }
        if self.queue_size < self.max_batch {
            push("queue_size", "must be at least max_batch".into());
        }
        if self.flush_interval.is_zero() {
            push("flush_interval", "must be greater than zero".into());
        }
        if self.max_request_bytes < MIN_REQUEST_BYTES {
            push(
                "max_request_bytes",
                format!("must be at least {MIN_REQUEST_BYTES}"),
            );
        }
        if self.initial_backoff.is_zero() {
            push("initial_backoff", "must be greater than zero".into());
        }
        if self.max_backoff < self.initial_backoff {
            push("max_backoff", "must be at least initial_backoff".into());
        }
        if self.timeout.is_zero() {
            push("timeout", "must be greater than zero".into());
        }
        if self.connect_timeout.is_zero() {
            push("connect_timeout", "must be greater than zero".into());
        }
        self.queue.check(prefix, invalid);
    }
}

/// Checks `host:port` (IPv6 hosts in brackets); the port must not be 0.
pub(crate) fn parse_host_port(text: &str) -> Result<(&str, u16), String> {
    let bad = || format!("{text:?} is not host:port");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let valid_host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => ipv6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && !host.contains([':', '/', '?', '#', '@', ' ', '[', ']']),
    };
    if port == 0 || !valid_host || text.contains("://") {
        return Err(bad());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &ForwardConfig, agent: bool) -> Vec<String> {
        let mut invalid = Vec::new();
        config.validate("exporters.forward", agent, &mut invalid);
        invalid.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn agent_without_gateways_names_both_keys() {
        assert_eq!(
            problems(&ForwardConfig::default(), true),
            [
                "exporters.forward.endpoints: mode agent needs gateways: set exporters.forward.endpoints or exporters.forward.dns"
            ]
        );
        assert!(problems(&ForwardConfig::default(), false).is_empty());
    }

    #[test]
    fn endpoints_and_dns_are_checked() {
        let config = ForwardConfig {
            endpoints: vec![
                "gw-0:4317".into(),
                "http://gw-1:4317".into(),
                "gw-0:4317".into(),
                "gw-2".into(),
                "[::1]:4317".into(),
                "10.0.0.1:0".into(),
            ],
            dns: "gateways.tracemap.svc:4317".into(),
            ..ForwardConfig::default()
        };
        assert_eq!(
            problems(&config, true),
            [
                "exporters.forward.dns: set endpoints or dns, not both",
                "exporters.forward.endpoints[1]: \"http://gw-1:4317\" is not host:port",
                "exporters.forward.endpoints[2]: gw-0:4317 is listed twice",
                "exporters.forward.endpoints[3]: \"gw-2\" is not host:port",
                "exporters.forward.endpoints[5]: \"10.0.0.1:0\" is not host:port",
            ]
        );
    }

    #[test]
    fn limits_are_checked() {
        let config = ForwardConfig {
            dns: "gw:4317".into(),
            dns_refresh: Duration::from_millis(10),
            queue_size: 10,
            max_batch: 100,
            flush_interval: Duration::ZERO,
            max_request_bytes: 10,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(1),
            timeout: Duration::ZERO,
            connect_timeout: Duration::ZERO,
            ..ForwardConfig::default()
        };
        let keys: Vec<String> = problems(&config, true)
            .iter()
            .map(|p| p.split(':').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "exporters.forward.dns_refresh",
                "exporters.forward.queue_size",
                "exporters.forward.flush_interval",
                "exporters.forward.max_request_bytes",
                "exporters.forward.max_backoff",
                "exporters.forward.timeout",
                "exporters.forward.connect_timeout",
            ]
        );
    }

    #[test]
    fn forwarding_settings_outside_agent_mode_are_refused() {
        let config = ForwardConfig {
            dns: "gw:4317".into(),
            ..ForwardConfig::default()
        };
        assert_eq!(
            problems(&config, false),
            ["exporters.forward.dns: only used with mode: agent"]
        );
    }
}
