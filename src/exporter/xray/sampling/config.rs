//! `exporters.xray.sampling`: which traces go on to X-Ray.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exporter::xray::rules::RuleSet;
use crate::validate::Invalid;

/// Tail sampling before translation; the graph and metrics see every span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Decide per trace which go to X-Ray; off sends every span.
    pub enabled: bool,
    /// A trace is decided this long after its last span arrived.
    #[serde(with = "humantime_serde")]
    pub decision_wait: Duration,
    /// Traces held waiting for a decision, over all workers; beyond it the
    /// least recently updated are decided early and counted.
    pub max_traces: usize,
    /// Bytes of held spans, over all workers; beyond it, as `max_traces`.
    pub max_bytes: usize,
    /// Decided trace ids remembered, so late spans follow their decision.
    pub max_decided: usize,
    /// At least this many traces a minute through each edge (0: no floor).
    pub per_edge_min: u32,
    /// Traces a second kept by this instance in all (0: no budget); traces
    /// no other policy keeps are kept with the probability that fills it,
    /// decided by the trace id.
    pub max_traces_per_second: u32,
    /// Keep traces with an edge slower than that edge's own p99 over the
    /// last `baseline_window`, as the graph measures it.
    pub slow_p99: bool,
    /// The window the p99 baselines cover.
    #[serde(with = "humantime_serde")]
    pub baseline_window: Duration,
    /// Fixed latency thresholds per service: a trace is slow when a span of
    /// that service lasts longer.
    pub slow_thresholds: BTreeMap<String, humantime_serde::Serde<Duration>>,
    /// X-Ray sampling rules (get-sampling-rules output, a list of
    /// SamplingRule objects, or an SDK local rules file); empty for none.
    pub rules_file: Option<PathBuf>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            decision_wait: Duration::from_secs(10),
            max_traces: 50_000,
            // Beside a node agent's 64 MiB: the held spans of ~100 k spans.
            max_bytes: 32 << 20,
            max_decided: 100_000,
            per_edge_min: 1,
            max_traces_per_second: 100,
            slow_p99: true,
            baseline_window: Duration::from_secs(600),
            slow_thresholds: BTreeMap::new(),
            rules_file: None,
        }
    }
}

impl SamplingConfig {
    /// Appends every broken rule under `prefix` (`exporters.xray.sampling`);
    /// the rules file is read and checked here, so `check-config` names
    /// its problems.
    pub(crate) fn check(&self, prefix: &str, invalid: &mut Vec<Invalid>) {
        let mut fail = |key: &str, reason: String| {
            invalid.push(Invalid {
                key: format!("{prefix}.{key}"),
                reason,
            });
        };
        if self.decision_wait < Duration::from_secs(1)
            || self.decision_wait > Duration::from_secs(600)
        {
            fail("decision_wait", "must be 1s to 10m".into());
        }
        if self.max_traces == 0 {
            fail("max_traces", "must be at least 1".into());
        }
        if self.max_bytes < 1 << 20 {
            fail("max_bytes", "must be at least 1 MiB (1048576)".into());
        }
        if self.baseline_window < Duration::from_secs(60) {
            fail(
                "baseline_window",
                "must be at least 1m (the graph's minute)".into(),
            );
        }
        if let Some((service, _)) = self.slow_thresholds.iter().find(|(_, d)| d.is_zero()) {
            fail(
                "slow_thresholds",
                format!("{service}: a threshold must be greater than zero"),
            );
        }
        if let Err(err) = self.rules() {
            fail("rules_file", err.to_string());
        }
    }

    /// The rules of `rules_file`, if one is set.
    pub(crate) fn rules(
        &self,
    ) -> Result<Option<RuleSet>, crate::exporter::xray::rules::RulesError> {
        self.rules_file.as_deref().map(RuleSet::load).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(config: &SamplingConfig) -> Vec<String> {
        let mut invalid = Vec::new();
        config.check("exporters.xray.sampling", &mut invalid);
        invalid
            .into_iter()
            .map(|i| format!("{}: {}", i.key, i.reason))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(keys(&SamplingConfig::default()).is_empty());
    }

    #[test]
    fn a_bad_rules_file_is_named_with_its_rule_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.json");
        std::fs::write(
            &path,
            r#"[{"RuleName": "cart", "Priority": 5, "FixedRate": 2, "ReservoirSize": 1}]"#,
        )
        .unwrap();
        let config = SamplingConfig {
            rules_file: Some(path.clone()),
            ..SamplingConfig::default()
        };
        let found = keys(&config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("exporters.xray.sampling.rules_file: "),
            "{found:?}"
        );
        assert!(found[0].contains(&path.display().to_string()), "{found:?}");
        assert!(
            found[0].contains("rule \"cart\": FixedRate 2 must be 0 to 1"),
            "{found:?}"
        );
        let missing = SamplingConfig {
            rules_file: Some(dir.path().join("absent.json")),
            ..SamplingConfig::default()
        };
        assert!(keys(&missing)[0].contains("absent.json"));
    }

    #[test]
    fn every_broken_setting_is_listed() {
        let config = SamplingConfig {
            decision_wait: Duration::ZERO,
            max_traces: 0,
            max_bytes: 10,
            baseline_window: Duration::from_secs(1),
            slow_thresholds: [("cart".to_string(), Duration::ZERO.into())].into(),
            ..SamplingConfig::default()
        };
        let found: Vec<_> = keys(&config)
            .into_iter()
            .map(|k| k.split(':').next().unwrap().to_string())
            .collect();
        assert_eq!(
            found,
            [
                "exporters.xray.sampling.decision_wait",
                "exporters.xray.sampling.max_traces",
                "exporters.xray.sampling.max_bytes",
                "exporters.xray.sampling.baseline_window",
                "exporters.xray.sampling.slow_thresholds",
            ]
        );
    }

    #[test]
    fn thresholds_read_as_durations() {
        let config: SamplingConfig = serde_yaml_ng::from_str(
            "enabled: true\nslow_thresholds: {checkout: 500ms}\nmax_traces_per_second: 20\n",
        )
        .unwrap();
        assert_eq!(
            *config.slow_thresholds["checkout"],
            Duration::from_millis(500)
        );
        assert_eq!(config.max_traces_per_second, 20);
    }
}
