//! The YAML configuration: serde types, embedded defaults and `validate()`.
//!
//! Precedence is CLI > environment > file > default: [`Config::load`] reads
//! the file over the defaults, then [`Overrides`] from the environment and
//! from the command line are applied in that order.

mod env;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use env::{
    ENV_API_LISTEN, ENV_CONFIG, ENV_DATA_DIR, ENV_GRPC_LISTEN, ENV_HTTP_LISTEN, ENV_LOG_FORMAT,
    ENV_LOG_LEVEL, Overrides,
};

pub use crate::store::{CompactionTier, StorageConfig};
pub use crate::validate::{Invalid, Valid};

use crate::exporter::cloudwatch::CloudWatchConfig;
use crate::exporter::forward::ForwardConfig;
use crate::exporter::xray::XrayConfig;
use crate::graph::GraphConfig;
use crate::pipeline::PipelineConfig;
use crate::receiver::{OtlpGrpcConfig, OtlpHttpConfig};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Deployment role: `standalone`, `agent` (forward to gateways) or
    /// `gateway` (the collector agents forward to).
    pub mode: Mode,
    /// Span receivers.
    pub receivers: ReceiversConfig,
    /// The API, metrics and health server.
    pub api: ApiConfig,
    /// Queues and workers between receivers and consumers.
    pub pipeline: PipelineConfig,
    /// The service graph and span metrics.
    pub graph: GraphConfig,
    /// Durable local state and the graph's history.
    pub storage: StorageConfig,
    /// Where traces and derived metrics go besides the built-in API.
    pub exporters: ExportersConfig,
    /// Log output.
    pub log: LogConfig,
    /// Time allowed from SIGTERM to exit: stop receivers, drain, flush.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Standalone,
            receivers: ReceiversConfig::default(),
            api: ApiConfig::default(),
            pipeline: PipelineConfig::default(),
            graph: GraphConfig::default(),
            storage: StorageConfig::default(),
            exporters: ExportersConfig::default(),
            log: LogConfig::default(),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

/// Deployment role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Receive, process and export in one process.
    #[default]
    Standalone,
    /// Forward every span to a gateway chosen by trace id
    /// (`exporters.forward`); no graph unless `keep_local_graph`.
    Agent,
    /// Receive from agents and process as standalone does; the name says
    /// what the instance is for.
    Gateway,
}

impl Mode {
    /// The name as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Agent => "agent",
            Self::Gateway => "gateway",
        }
    }
}

/// Span receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiversConfig {
    /// OTLP over gRPC and HTTP.
    pub otlp: OtlpConfig,
}

/// OTLP receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// OTLP/gRPC (`TraceService/Export`).
    pub grpc: OtlpGrpcConfig,
    /// OTLP/HTTP (`POST /v1/traces`).
    pub http: OtlpHttpConfig,
}

/// The API server: graph API, `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address; loopback by default, `0.0.0.0:8080` in Kubernetes.
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// Exporters; each is off until enabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ExportersConfig {
    /// Traces to AWS X-Ray as segment documents.
    pub xray: XrayConfig,
    /// Derived metrics to Amazon CloudWatch (EMF log events or PutMetricData).
    pub cloudwatch: CloudWatchConfig,
    /// Agent mode: OTLP to gateways by trace-id hash.
    pub forward: ForwardConfig,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`info`) or directives (`info,tracemap=debug`).
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?}, expected text or json"
            )),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, which names the key and line.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// An environment variable has a value that does not parse.
    #[error("invalid environment variable {name}={value:?}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// Values parse but break a rule.
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Invalid>),
}

/// A configuration that passed [`Config::validate`]; the app builds only from this.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig {
    config: Config,
    /// Each component's checked section, as its `start` takes it.
    pub sections: Sections,
}

/// The checked section of every component.
#[derive(Debug, Clone, PartialEq)]
pub struct Sections {
    /// `receivers.otlp.grpc`.
    pub otlp_grpc: Valid<OtlpGrpcConfig>,
    /// `receivers.otlp.http`.
    pub otlp_http: Valid<OtlpHttpConfig>,
    /// `pipeline`.
    pub pipeline: Valid<PipelineConfig>,
    /// `graph`.
    pub graph: Valid<GraphConfig>,
    /// `storage`.
    pub storage: Valid<StorageConfig>,
    /// `exporters.xray`.
    pub xray: Valid<XrayConfig>,
    /// `exporters.cloudwatch`.
    pub cloudwatch: Valid<CloudWatchConfig>,
    /// `exporters.forward`.
    pub forward: Valid<ForwardConfig>,
}

impl ValidConfig {
    /// The checked configuration.
    pub fn get(&self) -> &Config {
        &self.config
    }
}

impl std::ops::Deref for ValidConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

impl Config {
    /// Reads `path` over the defaults, or returns the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses YAML text over the defaults; an empty document means all defaults.
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml_ng::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Option<Self> = serde_yaml_ng::from_str(text)?;
        Ok(config.unwrap_or_default())
    }

    /// Checks every rule and reports all broken ones at once.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let mut invalid = Vec::new();
        let otlp_grpc = self
            .receivers
            .otlp
            .grpc
            .validate("receivers.otlp.grpc", &mut invalid);
        let otlp_http = self
            .receivers
            .otlp
            .http
            .validate("receivers.otlp.http", &mut invalid);
        let pipeline = self.pipeline.validate("pipeline", &mut invalid);
        let graph = self.graph.validate("graph", &mut invalid);
        let storage = self
            .storage
            .validate("storage", self.graph.retention, &mut invalid);
        let xray = self.exporters.xray.validate("exporters.xray", &mut invalid);
        let cloudwatch = self
            .exporters
            .cloudwatch
            .validate("exporters.cloudwatch", &mut invalid);
        // An agent forwards spans and keeps no graph of its own: its
        // metrics would be empty, and the gateways export the real ones.
        if self.mode == Mode::Agent
            && self.exporters.cloudwatch.enabled
            && !self.exporters.forward.keep_local_graph
        {
            invalid.push(Invalid {
                key: "exporters.cloudwatch.enabled".into(),
                reason: "an agent has no service graph to export; enable it on the gateways \
                         (or set exporters.forward.keep_local_graph)"
                    .into(),
            });
        }
        if self.mode == Mode::Agent && self.exporters.xray.sampling.enabled {
            invalid.push(Invalid {
                key: "exporters.xray.sampling.enabled".into(),
                reason: "sampling runs where a trace's spans meet: enable it on the gateways \
                         (agents forward every span)"
                    .into(),
            });
        }
        let forward = self.exporters.forward.validate(
            "exporters.forward",
            self.mode == Mode::Agent,
            &mut invalid,
        );
        if let Err(reason) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            invalid.push(Invalid {
                key: "log.level".into(),
                reason: format!("not a level or filter directive: {reason}"),
            });
        }
        if self.shutdown_timeout.is_zero() {
            invalid.push(Invalid {
                key: "shutdown_timeout".into(),
                reason: "must be greater than zero".into(),
            });
        }
        self.check_listen_conflicts(&mut invalid);
        let sections = (|| {
            Some(Sections {
                otlp_grpc: otlp_grpc?,
                otlp_http: otlp_http?,
                pipeline: pipeline?,
                graph: graph?,
                storage: storage?,
                xray: xray?,
                cloudwatch: cloudwatch?,
                forward: forward?,
            })
        })();
        match sections {
            Some(sections) if invalid.is_empty() => Ok(ValidConfig {
                config: self,
                sections,
            }),
            _ => Err(ConfigError::Invalid(invalid)),
        }
    }

    fn check_listen_conflicts(&self, invalid: &mut Vec<Invalid>) {
        let otlp = &self.receivers.otlp;
        let mut listeners = vec![("api.listen", self.api.listen)];
        if otlp.grpc.enabled {
            listeners.push(("receivers.otlp.grpc.listen", otlp.grpc.listen));
        }
        if otlp.http.enabled {
            listeners.push(("receivers.otlp.http.listen", otlp.http.listen));
        }
        for (i, (key, addr)) in listeners.iter().enumerate() {
            if addr.port() == 0 {
                continue;
            }
            if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| a == addr) {
                invalid.push(Invalid {
                    key: (*key).into(),
                    reason: format!("{addr} is already used by {other}"),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_that_validate() {
        let config = Config::from_yaml("").unwrap();
        assert_eq!(config, Config::default());
        let valid = config.validate().unwrap();
        assert_eq!(valid.receivers.otlp.grpc.listen.port(), 4317);
        assert_eq!(valid.receivers.otlp.http.listen.port(), 4318);
        assert_eq!(valid.api.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            valid.receivers.otlp.grpc.max_recv_msg_bytes,
            4 * 1024 * 1024
        );
    }

    #[test]
    fn example_file_parses_and_validates() {
        let text = include_str!("../../tracemap.example.yaml");
        let config = Config::from_yaml(text).unwrap();
        assert_eq!(
            config.storage,
            StorageConfig::default(),
            "the example shows the storage defaults"
        );
        config.validate().unwrap();
    }

    /// The example shows every key with its default, so it documents them all.
    #[test]
    fn example_file_lists_every_key_at_its_default() {
        let text = include_str!("../../tracemap.example.yaml");
        assert_eq!(Config::from_yaml(text).unwrap(), Config::default());
        fn keys(value: &serde_yaml_ng::Value, prefix: &str, out: &mut Vec<String>) {
            if let serde_yaml_ng::Value::Mapping(map) = value {
                for (key, value) in map {
                    let key = format!("{prefix}{}", key.as_str().unwrap());
                    keys(value, &format!("{key}."), out);
                    out.push(key);
                }
            }
        }
        let (mut documented, mut all) = (Vec::new(), Vec::new());
        keys(&serde_yaml_ng::from_str(text).unwrap(), "", &mut documented);
        keys(
            &serde_yaml_ng::to_value(Config::default()).unwrap(),
            "",
            &mut all,
        );
        let missing: Vec<_> = all.iter().filter(|k| !documented.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "not in tracemap.example.yaml: {missing:?}"
        );
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = Config::from_yaml("receivers:\n  otlp:\n    grpc:\n      listne: 1.2.3.4:1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listne"), "{err}");
        assert!(err.contains("receivers.otlp.grpc"), "{err}");
    }

    #[test]
    fn bad_address_names_the_key() {
        let err = Config::from_yaml("api:\n  listen: localhost\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.listen"), "{err}");
    }

    #[test]
    fn unknown_mode_is_rejected() {
        let err = Config::from_yaml("mode: sidecar\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `sidecar`"), "{err}");
        assert!(err.contains("`standalone`, `agent`, `gateway`"), "{err}");
    }

    #[test]
    fn agent_mode_needs_gateways() {
        let err = Config::from_yaml("mode: agent\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid configuration: exporters.forward.endpoints: mode agent needs gateways: \
             set exporters.forward.endpoints or exporters.forward.dns"
        );
        let config = Config::from_yaml(
            "mode: agent\nexporters:\n  forward:\n    dns: gateways.tracemap.svc.cluster.local:4317\n    dns_refresh: 10s\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(config.mode, Mode::Agent);
        assert_eq!(
            config.exporters.forward.dns_refresh,
            Duration::from_secs(10)
        );
        let gateway = Config::from_yaml("mode: gateway\n")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(gateway.mode, Mode::Gateway);
    }

    #[test]
    fn forward_keys_are_checked_for_typos() {
        let err = Config::from_yaml("exporters:\n  forward:\n    endpoint: [a:1]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exporters.forward"), "{err}");
        assert!(err.contains("unknown field `endpoint`"), "{err}");
    }

    #[test]
    fn validate_reports_every_broken_rule() {
        let mut config = Config::default();
        config.pipeline.queue_capacity = 0;
        config.receivers.otlp.grpc.max_recv_msg_bytes = 10;
        config.log.level = "loud=?".into();
        config.shutdown_timeout = Duration::ZERO;
        config.exporters.xray.batch_size = 51;
        config.exporters.xray.endpoint = "localhost:4566".into();
        let ConfigError::Invalid(invalid) = config.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        let keys: Vec<_> = invalid.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "receivers.otlp.grpc.max_recv_msg_bytes",
                "pipeline.queue_capacity",
                "exporters.xray.endpoint",
                "exporters.xray.batch_size",
                "log.level",
                "shutdown_timeout"
            ]
        );
    }

    #[test]
    fn listen_conflicts_are_reported() {
        let mut config = Config::default();
        config.receivers.otlp.http.listen = config.receivers.otlp.grpc.listen;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("receivers.otlp.http.listen: 0.0.0.0:4317 is already used by receivers.otlp.grpc.listen"),
            "{err}"
        );
    }

    #[test]
    fn cloudwatch_exporter_is_off_by_default_parses_and_needs_a_graph() {
        assert!(!Config::default().exporters.cloudwatch.enabled);
        let config = Config::from_yaml(
            "exporters:\n  cloudwatch:\n    enabled: true\n    mode: putmetricdata\n    region: eu-west-1\n",
        )
        .unwrap();
        config.clone().validate().unwrap();
        let mut agent = config;
        agent.mode = Mode::Agent;
        agent.exporters.forward.endpoints = vec!["gw:4317".into()];
        let ConfigError::Invalid(invalid) = agent.clone().validate().unwrap_err() else {
            panic!("not an Invalid error")
        };
        assert_eq!(invalid[0].key, "exporters.cloudwatch.enabled");
        agent.exporters.forward.keep_local_graph = true;
        agent.validate().unwrap();
        let err = Config::from_yaml("exporters:\n  cloudwatch:\n    flush_intervall: 1m\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("flush_intervall"), "{err}");
    }

    #[test]
    fn xray_exporter_is_off_by_default_and_parses() {
        assert!(!Config::default().exporters.xray.enabled);
        let config = Config::from_yaml(
            "exporters:\n  xray:\n    enabled: true\n    region: eu-west-1\n    endpoint: http://127.0.0.1:5000\n    index_all_attributes: true\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        let xray = &config.exporters.xray;
        assert!(xray.enabled && xray.translate.index_all_attributes);
        assert_eq!(xray.endpoint, "http://127.0.0.1:5000");
        let err = Config::from_yaml("exporters:\n  xray:\n    regoin: eu-west-1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("regoin") && err.contains("exporters.xray"),
            "{err}"
        );
    }

    #[test]
    fn durations_are_human() {
        let config =
            Config::from_yaml("shutdown_timeout: 1m30s\npipeline:\n  enqueue_timeout: 250ms\n")
                .unwrap();
        assert_eq!(config.shutdown_timeout, Duration::from_secs(90));
        assert_eq!(config.pipeline.enqueue_timeout, Duration::from_millis(250));
    }
}
