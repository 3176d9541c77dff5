//! `TRACEMAP_*` environment overrides, and the same overrides from the CLI.
//!
//! Lookups go through a function so tests pass a map instead of touching
//! the process environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Config, ConfigError, LogFormat};

/// Path of the YAML config file.
pub const ENV_CONFIG: &str = "TRACEMAP_CONFIG";
/// `receivers.otlp.grpc.listen`.
pub const ENV_GRPC_LISTEN: &str = "TRACEMAP_GRPC_LISTEN";
/// `receivers.otlp.http.listen`.
pub const ENV_HTTP_LISTEN: &str = "TRACEMAP_HTTP_LISTEN";
/// `api.listen`.
pub const ENV_API_LISTEN: &str = "TRACEMAP_API_LISTEN";
/// `storage.data_dir`.
pub const ENV_DATA_DIR: &str = "TRACEMAP_DATA_DIR";
/// `log.level`.
pub const ENV_LOG_LEVEL: &str = "TRACEMAP_LOG_LEVEL";
/// `log.format`.
pub const ENV_LOG_FORMAT: &str = "TRACEMAP_LOG_FORMAT";

/// Settings that the environment or the command line may override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `receivers.otlp.grpc.listen`.
    pub grpc_listen: Option<SocketAddr>,
    /// `receivers.otlp.http.listen`.
    pub http_listen: Option<SocketAddr>,
    /// `api.listen`.
    pub api_listen: Option<SocketAddr>,
    /// `storage.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `log.level`.
    pub log_level: Option<String>,
    /// `log.format`.
    pub log_format: Option<LogFormat>,
}

impl Overrides {
    /// Reads the `TRACEMAP_*` variables through `lookup`; empty values count as unset.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        Ok(Self {
            grpc_listen: parse_var(ENV_GRPC_LISTEN, get(ENV_GRPC_LISTEN))?,
            http_listen: parse_var(ENV_HTTP_LISTEN, get(ENV_HTTP_LISTEN))?,
            api_listen: parse_var(ENV_API_LISTEN, get(ENV_API_LISTEN))?,
            data_dir: get(ENV_DATA_DIR).map(PathBuf::from),
            log_level: get(ENV_LOG_LEVEL),
            log_format: parse_var(ENV_LOG_FORMAT, get(ENV_LOG_FORMAT))?,
        })
    }

    /// Writes every set value into `config`.
    pub fn apply(self, config: &mut Config) {
        if let Some(addr) = self.grpc_listen {
            config.receivers.otlp.grpc.listen = addr;
        }
        if let Some(addr) = self.http_listen {
            config.receivers.otlp.http.listen = addr;
        }
        if let Some(addr) = self.api_listen {
            config.api.listen = addr;
        }
        if let Some(dir) = self.data_dir {
            config.storage.data_dir = dir;
        }
        if let Some(level) = self.log_level {
            config.log.level = level;
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
    }
}

fn parse_var<T>(name: &'static str, value: Option<String>) -> Result<Option<T>, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value
        .map(|value| {
            value.parse().map_err(|err: T::Err| ConfigError::Env {
                name,
                reason: err.to_string(),
                value,
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn cli_beats_env_beats_file_beats_default() {
        let mut config = Config::from_yaml(
            "receivers:\n  otlp:\n    grpc: {listen: '127.0.0.1:1111'}\n    http: {listen: '127.0.0.1:2222'}\n",
        )
        .unwrap();
        let from_env = Overrides::from_env(env(&[
            (ENV_HTTP_LISTEN, "127.0.0.1:3333"),
            (ENV_API_LISTEN, "127.0.0.1:4444"),
            (ENV_LOG_FORMAT, "json"),
        ]))
        .unwrap();
        let from_cli = Overrides {
            api_listen: Some("127.0.0.1:5555".parse().unwrap()),
            ..Overrides::default()
        };
        from_env.apply(&mut config);
        from_cli.apply(&mut config);

        assert_eq!(
            config.receivers.otlp.grpc.listen.port(),
            1111,
            "file beats default"
        );
        assert_eq!(
            config.receivers.otlp.http.listen.port(),
            3333,
            "env beats file"
        );
        assert_eq!(config.api.listen.port(), 5555, "cli beats env");
        assert_eq!(config.log.format, LogFormat::Json, "env beats default");
        assert_eq!(config.log.level, "info", "default stays");
    }

    #[test]
    fn empty_env_values_are_unset() {
        let overrides = Overrides::from_env(env(&[(ENV_GRPC_LISTEN, "")])).unwrap();
        assert_eq!(overrides, Overrides::default());
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err = Overrides::from_env(env(&[(ENV_GRPC_LISTEN, "4317")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid environment variable TRACEMAP_GRPC_LISTEN=\"4317\""),
            "{err}"
        );
        let err = Overrides::from_env(env(&[(ENV_LOG_FORMAT, "xml")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected text or json"), "{err}");
    }
}
