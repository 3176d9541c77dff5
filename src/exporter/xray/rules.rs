//! X-Ray sampling rules, read from the files teams already have: the
//! output of `aws xray get-sampling-rules` (`SamplingRuleRecords`), a list
//! of `SamplingRule` objects as `create-sampling-rule` takes them, or an
//! X-Ray SDK's local rules file (`version` 1 or 2, `rules` and `default`).
//!
//! A rule matches a request by service name and type, host, HTTP method,
//! URL path and attributes (`*` and `?` wildcards, case-insensitive as in
//! X-Ray); the first match by priority then name decides: the reservoir
//! keeps that many traces a second, the fixed rate a share of the rest.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// One rule, in the X-Ray API's field names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct SamplingRule {
    /// Unique within the file.
    pub rule_name: String,
    /// The API returns it; not used to match.
    #[serde(default, rename = "RuleARN")]
    pub rule_arn: Option<String>,
    /// Matched against the resource's ARN; only `*` matches spans without one.
    #[serde(default = "any", rename = "ResourceARN")]
    pub resource_arn: String,
    /// 1 to 9999; lower is evaluated first (`Default` is 10000).
    pub priority: u32,
    /// Share of requests kept beyond the reservoir, 0 to 1.
    pub fixed_rate: f64,
    /// Requests a second kept before the fixed rate applies.
    pub reservoir_size: u32,
    /// The service name (`service.name`).
    #[serde(default = "any")]
    pub service_name: String,
    /// The segment origin, such as `AWS::EKS::Container`.
    #[serde(default = "any")]
    pub service_type: String,
    /// The request's host.
    #[serde(default = "any")]
    pub host: String,
    /// The request's HTTP method.
    #[serde(default = "any", rename = "HTTPMethod")]
    pub http_method: String,
    /// The request's URL path.
    #[serde(default = "any", rename = "URLPath")]
    pub url_path: String,
    /// Format version; only 1 exists.
    #[serde(default = "version_one")]
    pub version: u32,
    /// Span attributes that must be present with a matching value.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn any() -> String {
    "*".into()
}

fn version_one() -> u32 {
    1
}

/// What a rule is matched against: the trace's entry span.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// `service.name`.
    pub service_name: &'a str,
    /// The segment origin, when the resource names a platform.
    pub service_type: Option<&'a str>,
    /// `server.address`, `http.host` or `net.host.name`.
    pub host: Option<&'a str>,
    /// `http.request.method` or `http.method`.
    pub http_method: Option<&'a str>,
    /// `url.path`, or the path of `http.target`.
    pub url_path: Option<&'a str>,
    /// `cloud.resource_id`.
    pub resource_arn: Option<&'a str>,
}

/// The rules of one file, in evaluation order.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    rules: Vec<SamplingRule>,
}

/// Why a rules file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not JSON, or not in any of the rule formats.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong, with the rule it is in.
        message: String,
    },
}

/// The local rules file of the X-Ray SDKs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalFile {
    version: u32,
    #[serde(default)]
    rules: Vec<LocalRule>,
    default: LocalDefault,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalRule {
    #[serde(default)]
    description: String,
    /// Version 1 names the service; version 2 the host.
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    host: Option<String>,
    http_method: String,
    url_path: String,
    fixed_target: u32,
    rate: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalDefault {
    fixed_target: u32,
    rate: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Record {
    sampling_rule: SamplingRule,
}

/// The lowest priority, `Default`'s.
pub const DEFAULT_PRIORITY: u32 = 10_000;

impl RuleSet {
    /// Reads and checks a rules file.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|message| RulesError::Format {
            path: shown,
            message,
        })
    }

    /// Parses any of the accepted formats and checks every rule.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let rules = match &value {
            serde_json::Value::Object(map) if map.contains_key("version") => {
                let file: LocalFile = serde_json::from_value(value)
                    .map_err(|e| format!("local rules file (version, rules, default): {e}"))?;
                from_local(file)?
            }
            serde_json::Value::Object(map) if map.contains_key("SamplingRuleRecords") => {
                let records = map["SamplingRuleRecords"].as_array().ok_or_else(|| {
                    "SamplingRuleRecords: expected a list of {\"SamplingRule\": ...}".to_string()
                })?;
                records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        Record::deserialize(r)
                            .map(|r| r.sampling_rule)
                            .map_err(|e| format!("SamplingRuleRecords[{i}]: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            serde_json::Value::Object(map) if map.contains_key("SamplingRule") => {
                vec![
                    Record::deserialize(&value)
                        .map_err(|e| format!("SamplingRule: {e}"))?
                        .sampling_rule,
                ]
            }
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, r)| SamplingRule::deserialize(r).map_err(|e| format!("rule [{i}]: {e}")))
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(
                    "expected get-sampling-rules output ({\"SamplingRuleRecords\": [...]}), a \
                     list of SamplingRule objects, or an SDK rules file ({\"version\": 2, ...})"
                        .into(),
                );
            }
        };
        Self::new(rules)
    }

    /// Checks `rules` and orders them as X-Ray evaluates them.
    pub fn new(mut rules: Vec<SamplingRule>) -> Result<Self, String> {
        let mut names = std::collections::HashSet::new();
        for rule in &rules {
            let what = format!("rule {:?}", rule.rule_name);
            if rule.rule_name.is_empty() || rule.rule_name.len() > 32 {
                return Err(format!("{what}: RuleName must be 1 to 32 characters"));
            }
            if !names.insert(rule.rule_name.as_str()) {
                return Err(format!("{what}: RuleName appears twice"));
            }
            if !(1..=DEFAULT_PRIORITY).contains(&rule.priority) {
                return Err(format!(
                    "{what}: Priority {} must be 1 to 9999 (10000 for Default)",
                    rule.priority
                ));
            }
            if !(0.0..=1.0).contains(&rule.fixed_rate) {
                return Err(format!(
                    "{what}: FixedRate {} must be 0 to 1",
                    rule.fixed_rate
                ));
            }
            if rule.version != 1 {
                return Err(format!("{what}: Version {} (only 1 exists)", rule.version));
            }
        }
        rules.sort_by(|a, b| (a.priority, &a.rule_name).cmp(&(b.priority, &b.rule_name)));
        Ok(Self { rules })
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[SamplingRule] {
        &self.rules
    }

    /// The index of the first rule matching `request` and `attribute`.
    pub fn find<'a>(
        &self,
        request: &Request<'_>,
        attribute: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<usize> {
        self.rules.iter().position(|rule| {
            let field = |pattern: &str, value: Option<&str>| {
                pattern == "*" || value.is_some_and(|v| wildcard_match(pattern, v))
            };
            field(&rule.service_name, Some(request.service_name))
                && field(&rule.service_type, request.service_type)
                && field(&rule.host, request.host)
                && field(&rule.http_method, request.http_method)
                && field(&rule.url_path, request.url_path)
                && field(&rule.resource_arn, request.resource_arn)
                && rule
                    .attributes
                    .iter()
                    .all(|(key, pattern)| field(pattern, attribute(key)))
        })
    }
}

fn from_local(file: LocalFile) -> Result<Vec<SamplingRule>, String> {
    if !matches!(file.version, 1 | 2) {
        return Err(format!(
            "version {}: local rules files are version 1 or 2",
            file.version
        ));
    }
    let rule = |name: String, priority, fixed_target, rate| SamplingRule {
        rule_name: name,
        rule_arn: None,
        resource_arn: any(),
        priority,
        fixed_rate: rate,
        reservoir_size: fixed_target,
        service_name: any(),
        service_type: any(),
        host: any(),
        http_method: any(),
        url_path: any(),
        version: 1,
        attributes: BTreeMap::new(),
    };
    let mut rules = Vec::with_capacity(file.rules.len() + 1);
    for (i, local) in file.rules.into_iter().enumerate() {
        let name = format!("local-{}", i + 1);
        let what = if local.description.is_empty() {
            name.clone()
        } else {
            format!("{name} ({})", local.description)
        };
        let mut out = rule(name, i as u32 + 1, local.fixed_target, local.rate);
        match (file.version, local.service_name, local.host) {
            (1, Some(service), None) => out.service_name = service,
            (2, None, Some(host)) => out.host = host,
            (1, _, _) => {
                return Err(format!(
                    "rules[{i}] {what}: version 1 rules take service_name"
                ));
            }
            _ => return Err(format!("rules[{i}] {what}: version 2 rules take host")),
        }
        out.http_method = local.http_method;
        out.url_path = local.url_path;
        rules.push(out);
    }
    rules.push(rule(
        "Default".into(),
        DEFAULT_PRIORITY,
        file.default.fixed_target,
        file.default.rate,
    ));
    Ok(rules)
}

/// X-Ray's glob: `*` any run of characters, `?` any one; case-insensitive.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (
        pattern.chars().flat_map(char::to_lowercase).collect(),
        text.chars().flat_map(char::to_lowercase).collect(),
    );
    // Greedy with one back-track point: linear for X-Ray's patterns.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_xray_does() {
        for (pattern, text, ok) in [
            ("*", "", true),
            ("/api/*", "/api/cart/1", true),
            ("/api/*", "/apx/cart", false),
            ("GET", "get", true),
            ("c?rt", "cart", true),
            ("c?rt", "crt", false),
            ("*.example.com", "shop.example.com", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
        ] {
            assert_eq!(wildcard_match(pattern, text), ok, "{pattern} ~ {text}");
        }
    }

    const RECORDS: &str = r#"{"SamplingRuleRecords": [
      {"SamplingRule": {"RuleName": "Default", "RuleARN": "arn:aws:xray:us-east-1:1:sampling-rule/Default",
        "ResourceARN": "*", "Priority": 10000, "FixedRate": 0.05, "ReservoirSize": 1,
        "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*", "URLPath": "*",
        "Version": 1, "Attributes": {}}, "CreatedAt": 0.0, "ModifiedAt": 1.0},
      {"SamplingRule": {"RuleName": "checkout-posts", "ResourceARN": "*", "Priority": 10,
        "FixedRate": 1.0, "ReservoirSize": 0, "ServiceName": "checkout", "ServiceType": "*",
        "Host": "*", "HTTPMethod": "POST", "URLPath": "/orders*", "Version": 1,
        "Attributes": {"tenant": "gold-*"}}}
    ]}"#;

    #[test]
    fn get_sampling_rules_output_is_read_in_priority_order() {
        let set = RuleSet::parse(RECORDS).unwrap();
        let names: Vec<_> = set.rules().iter().map(|r| r.rule_name.as_str()).collect();
        assert_eq!(names, ["checkout-posts", "Default"]);
        let request = Request {
            service_name: "checkout",
            http_method: Some("post"),
            url_path: Some("/orders/9"),
            ..Request::default()
        };
        let gold = |key: &str| (key == "tenant").then_some("gold-eu");
        assert_eq!(set.find(&request, gold), Some(0));
        assert_eq!(set.find(&request, |_| None), Some(1), "attribute missing");
        let get = Request {
            http_method: Some("GET"),
            ..request
        };
        assert_eq!(set.find(&get, gold), Some(1));
    }

    #[test]
    fn a_list_and_a_single_rule_are_read_too() {
        let one = r#"{"SamplingRule": {"RuleName": "a", "Priority": 1, "FixedRate": 0.5, "ReservoirSize": 2}}"#;
        let set = RuleSet::parse(one).unwrap();
        assert_eq!(set.rules()[0].host, "*");
        let list = r#"[{"RuleName": "a", "Priority": 1, "FixedRate": 0.5, "ReservoirSize": 2}]"#;
        assert_eq!(RuleSet::parse(list).unwrap(), set);
    }

    #[test]
    fn sdk_local_files_become_rules_with_a_default() {
        let v2 = r#"{"version": 2, "rules": [{"description": "moves", "host": "*",
            "http_method": "*", "url_path": "/api/move/*", "fixed_target": 0, "rate": 0.05}],
            "default": {"fixed_target": 1, "rate": 0.1}}"#;
        let set = RuleSet::parse(v2).unwrap();
        assert_eq!(set.rules().len(), 2);
        assert_eq!(set.rules()[0].url_path, "/api/move/*");
        assert_eq!(set.rules()[1].rule_name, "Default");
        assert_eq!(set.rules()[1].reservoir_size, 1);
        let v1 = r#"{"version": 1, "rules": [{"service_name": "cart", "http_method": "GET",
            "url_path": "*", "fixed_target": 2, "rate": 0.5}], "default": {"fixed_target": 1, "rate": 0.1}}"#;
        assert_eq!(RuleSet::parse(v1).unwrap().rules()[0].service_name, "cart");
    }

    #[test]
    fn bad_rules_are_named_with_their_field() {
        for (text, expect) in [
            ("{", "not JSON"),
            ("3", "expected get-sampling-rules output"),
            (
                r#"[{"RuleName": "a", "Priority": 1, "FixedRate": 1.5, "ReservoirSize": 0}]"#,
                "rule \"a\": FixedRate 1.5 must be 0 to 1",
            ),
            (
                r#"[{"RuleName": "a", "Priority": 0, "FixedRate": 0.5, "ReservoirSize": 0}]"#,
                "Priority 0 must be 1 to 9999",
            ),
            (
                r#"[{"RuleName": "a", "Priority": 1, "FixdRate": 0.5, "ReservoirSize": 0}]"#,
                "unknown field `FixdRate`",
            ),
            (
                r#"[{"RuleName": "a", "Priority": 1, "FixedRate": 0.5}]"#,
                "missing field `ReservoirSize`",
            ),
            (
                r#"[{"RuleName": "a", "Priority": 1, "FixedRate": 0.5, "ReservoirSize": 1},
                    {"RuleName": "a", "Priority": 2, "FixedRate": 0.5, "ReservoirSize": 1}]"#,
                "RuleName appears twice",
            ),
            (
                r#"{"version": 3, "default": {"fixed_target": 1, "rate": 0.1}}"#,
                "version 1 or 2",
            ),
            (
                r#"{"version": 2, "rules": [{"service_name": "a", "http_method": "*", "url_path": "*",
                   "fixed_target": 1, "rate": 0.1}], "default": {"fixed_target": 1, "rate": 0.1}}"#,
                "version 2 rules take host",
            ),
        ] {
            let err = RuleSet::parse(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}
