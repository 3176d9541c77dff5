//! PutMetricData: metric groups → request inputs, within every documented
//! limit. Pure: no I/O; `client.rs` turns an input into the SDK's call.
//!
//! Limits (CloudWatch PutMetricData): at most 1 000 metric data and 1 MB
//! per call, 30 dimensions per datum, 150 distinct values per datum with
//! `Values`/`Counts`; no NaN or infinity, and magnitudes between 2^-360
//! and 2^360 (others are refused). A group becomes one datum per metric
//! and dimension set; distributions with more values become more data.

use serde_json::{Value, json};

use super::model::{MetricGroup, MetricValue, Unit};

/// The documented limits; tests shrink the byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmdLimits {
    /// Metric data per call.
    pub max_data: usize,
    /// Bytes of one call's body, as the query protocol encodes it.
    pub max_request_bytes: usize,
    /// Dimensions per datum.
    pub max_dimensions: usize,
    /// Distinct values per datum.
    pub max_values: usize,
}

impl Default for PmdLimits {
    fn default() -> Self {
        Self {
            max_data: 1000,
            // 1 MB, less room for the action, version and namespace.
            max_request_bytes: 1_048_576 - 4096,
            max_dimensions: 30,
            max_values: 150,
        }
    }
}

/// Smallest and largest magnitudes CloudWatch accepts.
const MIN_MAGNITUDE: f64 = 8.515_920_e-109;
const MAX_MAGNITUDE: f64 = 1.174_271_e108;

/// One `MetricDatum`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Datum {
    /// Metric name.
    pub name: String,
    /// Dimension names and values.
    pub dimensions: Vec<(String, String)>,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Unit.
    pub unit: Unit,
    /// A single value (counts, rates).
    pub value: Option<f64>,
    /// Distinct values (distributions), ascending.
    pub values: Vec<f64>,
    /// How often each value occurred.
    pub counts: Vec<f64>,
}

/// One PutMetricData call.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PutMetricDataInput {
    /// Namespace.
    pub namespace: String,
    /// At most `max_data` data.
    pub data: Vec<Datum>,
}

/// What encoding produced and what it had to leave out.
#[derive(Debug, Default, PartialEq)]
pub struct Encoded {
    /// The calls to make.
    pub inputs: Vec<PutMetricDataInput>,
    /// Values that were NaN or infinite, left out.
    pub non_finite: u64,
    /// Dimensions left out of data with more than the limit.
    pub dimensions_truncated: u64,
}

/// A value CloudWatch accepts: tiny magnitudes become 0, huge ones are capped.
fn accepted(v: f64) -> f64 {
    if v.abs() < MIN_MAGNITUDE {
        0.0
    } else {
        v.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE)
    }
}

/// Bytes `text` takes form-urlencoded.
fn encoded_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => 1,
            _ => 3,
        })
        .sum()
}

impl Datum {
    /// Bytes this datum adds to a query-protocol body at position `n`
    /// (`MetricData.member.n.…=…&`), an upper bound.
    pub fn query_bytes(&self) -> usize {
        // "MetricData.member.1000." is the longest prefix.
        const PREFIX: usize = 23;
        let field = |name: &str, value_len: usize| PREFIX + name.len() + 1 + value_len + 1;
        let mut size = field("MetricName", encoded_len(&self.name))
            + field("Timestamp", 24)
            + field("Unit", self.unit.as_str().len())
            + field("StorageResolution", 2);
        for (i, (name, value)) in self.dimensions.iter().enumerate() {
            let member = format!("Dimensions.member.{}.", i + 1);
            size += field(&format!("{member}Name"), encoded_len(name));
            size += field(&format!("{member}Value"), encoded_len(value));
        }
        if self.value.is_some() {
            size += field("Value", 24);
        }
        for i in 0..self.values.len() {
            let index = format!("{}", i + 1).len();
            size += field("Values.member.", index + 24) + field("Counts.member.", index + 24);
        }
        size
    }

    /// The datum as the API documents it (for golden tests and logs).
    pub fn to_json(&self) -> Value {
        let mut datum = json!({
            "MetricName": self.name,
            "Dimensions": self.dimensions.iter()
                .map(|(n, v)| json!({"Name": n, "Value": v}))
                .collect::<Vec<_>>(),
            "Timestamp": self.timestamp_ms,
            "Unit": self.unit.as_str(),
            "StorageResolution": 60,
        });
        if let Some(v) = self.value {
            datum["Value"] = json!(v);
        } else {
            datum["Values"] = json!(self.values);
            datum["Counts"] = json!(self.counts);
        }
        datum
    }
}

impl PutMetricDataInput {
    /// The input as the API documents it.
    pub fn to_json(&self) -> Value {
        json!({
            "Namespace": self.namespace,
            "MetricData": self.data.iter().map(Datum::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Encodes `groups` into calls.
pub fn encode(namespace: &str, groups: &[MetricGroup], limits: &PmdLimits) -> Encoded {
    let mut out = Encoded::default();
    let mut data = Vec::new();
    for group in groups {
        for set in &group.dimension_sets {
            out.dimensions_truncated += set.len().saturating_sub(limits.max_dimensions) as u64;
            let dimensions: Vec<(String, String)> = set
                .iter()
                .take(limits.max_dimensions)
                .filter_map(|name| group.dimensions.iter().find(|(n, _)| n == name).cloned())
                .collect();
            for metric in &group.metrics {
                let datum = |value, values, counts| Datum {
                    name: metric.name.clone(),
                    dimensions: dimensions.clone(),
                    timestamp_ms: group.timestamp_ms,
                    unit: metric.unit,
                    value,
                    values,
                    counts,
                };
                match &metric.value {
                    MetricValue::Scalar(v) if v.is_finite() => {
                        data.push(datum(Some(accepted(*v)), Vec::new(), Vec::new()));
                    }
                    MetricValue::Scalar(_) => out.non_finite += 1,
                    MetricValue::Distribution(d) => {
                        let (values, counts): (Vec<f64>, Vec<f64>) = d
                            .values
                            .iter()
                            .zip(&d.counts)
                            .filter(|(v, c)| {
                                let ok = v.is_finite() && c.is_finite() && **c > 0.0;
                                out.non_finite += u64::from(!v.is_finite() || !c.is_finite());
                                ok
                            })
                            .map(|(v, c)| (accepted(*v), *c))
                            .unzip();
                        for start in (0..values.len()).step_by(limits.max_values.max(1)) {
                            let end = (start + limits.max_values).min(values.len());
                            data.push(datum(
                                None,
                                values[start..end].to_vec(),
                                counts[start..end].to_vec(),
                            ));
                        }
                    }
                }
            }
        }
    }
    let mut bytes = 0;
    for datum in data {
        let size = datum.query_bytes();
        let fits = out.inputs.last().is_some_and(|input| {
            input.data.len() < limits.max_data && bytes + size <= limits.max_request_bytes
        });
        if !fits {
            out.inputs.push(PutMetricDataInput {
                namespace: namespace.to_owned(),
                data: Vec::new(),
            });
            bytes = 0;
        }
        bytes += size;
        out.inputs
            .last_mut()
            .expect("pushed above")
            .data
            .push(datum);
    }
    out
}
