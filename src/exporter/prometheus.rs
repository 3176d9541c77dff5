//! Prometheus series derived from the service graph, with the names and
//! labels Grafana's service graph and span-metrics views read
//! (`traces_service_graph_*`, `traces_spanmetrics_*`), plus the graph's
//! own health (`tracemap_graph_*`).
//!
//! A custom collector reads the shards at scrape time, so the hot path
//! only touches shard-local state.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::graph::Graph;
use crate::graph::edge::{EdgeKey, Histogram};
use crate::graph::spanmetrics::SeriesKey;

/// Scrape-time collector over the graph.
#[derive(Debug)]
pub struct ServiceGraphCollector {
    graph: Graph,
}

impl ServiceGraphCollector {
    /// A collector reading `graph`.
    pub fn new(graph: Graph) -> Self {
        Self { graph }
    }
}

const FAILED: [&str; 2] = ["false", "true"];

/// `client_<dimension>` / `server_<dimension>` label names, with characters
/// Prometheus does not allow in label names replaced by `_`.
fn dimension_labels(dimensions: &[String]) -> Vec<(String, String)> {
    let sanitize = |key: &str| -> String {
        key.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    dimensions
        .iter()
        .map(|d| {
            (
                format!("client_{}", sanitize(d)),
                format!("server_{}", sanitize(d)),
            )
        })
        .collect()
}

/// Labels of one span-metrics series.
fn span_labels(key: &SeriesKey) -> [(&'static str, &str); 4] {
    [
        ("service", &*key.service),
        ("span_name", &*key.span_name),
        ("span_kind", key.kind.as_str()),
        ("status_code", key.status.as_str()),
    ]
}

/// Labels of one edge series: client, server, connection_type, the
/// dimensions, then `failed` when given.
fn edge_labels<'a>(
    key: &'a EdgeKey,
    names: &'a [(String, String)],
    failed: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![
        ("client", &*key.client),
        ("server", &*key.server),
        ("connection_type", key.connection_type.as_str()),
    ];
    let value = |v: &'a Option<Box<str>>| v.as_deref().unwrap_or("");
    for (i, (client_name, server_name)) in names.iter().enumerate() {
        labels.push((client_name, key.client_dimensions.get(i).map_or("", value)));
        labels.push((server_name, key.server_dimensions.get(i).map_or("", value)));
    }
    if let Some(failed) = failed {
        labels.push(("failed", failed));
    }
    labels
}

fn buckets(bounds: &[f64], histogram: &Histogram) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(histogram.counts.iter().copied())
        .collect()
}

fn encode_histogram(
    family: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &[(&str, &str)],
    bounds: &[f64],
    histogram: &Histogram,
) -> Result<(), std::fmt::Error> {
    family
        .encode_family(&labels)?
        .encode_histogram::<NoLabelSet>(
            histogram.sum,
            histogram.count(),
            &buckets(bounds, histogram),
            None,
        )
}

impl Collector for ServiceGraphCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let bounds = &self.graph.config().latency_histogram_buckets;
        let names = dimension_labels(&self.graph.config().dimensions);
        let totals = self.graph.edge_totals();

        let mut family = encoder.encode_descriptor(
            "traces_service_graph_request",
            "Requests between two nodes, by whether they failed",
            None,
            MetricType::Counter,
        )?;
        for (key, total) in &totals {
            for (requests, failed) in total.requests.iter().zip(FAILED) {
                if *requests == 0 {
                    continue;
                }
                let labels = edge_labels(key, &names, Some(failed));
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(requests, None)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "traces_service_graph_request_failed",
            "Failed requests between two nodes",
            None,
            MetricType::Counter,
        )?;
        for (key, total) in &totals {
            let labels = edge_labels(key, &names, None);
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&total.requests[1], None)?;
        }

        for (name, help, server_side) in [
            (
                "traces_service_graph_request_server_seconds",
                "Request duration seen by the server, seconds",
                true,
            ),
            (
                "traces_service_graph_request_client_seconds",
                "Request duration seen by the client, seconds",
                false,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (key, total) in &totals {
                let histograms = if server_side {
                    &total.server
                } else {
                    &total.client
                };
                for (histogram, failed) in histograms.iter().zip(FAILED) {
                    if histogram.count() == 0 {
                        continue;
                    }
                    let labels = edge_labels(key, &names, Some(failed));
                    encode_histogram(&mut family, &labels, bounds, histogram)?;
                }
            }
        }

        let spans = self.graph.span_metrics();
        let mut family = encoder.encode_descriptor(
            "traces_spanmetrics_calls",
            "Spans per service, span name, kind and status",
            None,
            MetricType::Counter,
        )?;
        for (key, stats) in &spans.series {
            let labels = span_labels(key);
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&stats.calls, None)?;
        }
        let mut family = encoder.encode_descriptor(
            "traces_spanmetrics_latency",
            "Span duration per service, span name, kind and status, seconds",
            None,
            MetricType::Histogram,
        )?;
        for (key, stats) in &spans.series {
            let labels = span_labels(key);
            encode_histogram(&mut family, &labels, bounds, &stats.latency)?;
        }

        let (counters, pending, edges) = self.graph.health();
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64| {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)
        };
        gauge(
            &mut encoder,
            "tracemap_graph_pending_halves",
            "Span halves waiting in pairing stores for the other half of their call",
            pending as i64,
        )?;
        gauge(
            &mut encoder,
            "tracemap_graph_edges",
            "Distinct edges held in memory",
            edges as i64,
        )?;
        let mut counter = |name: &str, help: &str, labelled: &[(&str, u64)], label: &str| {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (value, count) in labelled {
                if label.is_empty() {
                    family.encode_counter::<NoLabelSet, _, u64>(count, None)?;
                } else {
                    family
                        .encode_family(&[(label, *value)])?
                        .encode_counter::<NoLabelSet, _, u64>(count, None)?;
                }
            }
            Ok::<(), std::fmt::Error>(())
        };
        counter(
            "tracemap_graph_completed_requests",
            "Requests recorded on edges, by how they were completed",
            &[
                ("paired", counters.paired),
                ("database", counters.database),
                ("user", counters.user),
                ("virtual_node", counters.expired_virtual),
            ],
            "source",
        )?;
        counter(
            "tracemap_graph_expired_halves",
            "Halves that expired unpaired, by what became of them",
            &[
                ("virtual_node", counters.expired_virtual),
                ("discarded", counters.expired_discarded),
            ],
            "result",
        )?;
        counter(
            "tracemap_graph_dropped_spans",
            "Spans or calls the graph could not record, by reason",
            &[
                ("store_full", counters.dropped_store_full),
                ("edge_limit", counters.dropped_edge_limit),
            ],
            "reason",
        )?;
        counter(
            "tracemap_graph_duplicate_spans",
            "Halves whose call key was already waiting on the same side",
            &[("", counters.duplicates)],
            "",
        )?;
        counter(
            "tracemap_graph_pruned_edges",
            "Edges removed after idling past the retention",
            &[("", counters.pruned_edges)],
            "",
        )?;
        counter(
            "tracemap_spanmetrics_overflow_spans",
            "Spans folded into an overflow series because of the series limit",
            &[("", spans.overflow_spans)],
            "",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_dimensions_split_the_service_graph_series() {
        use prometheus_client::registry::Registry;

        let h = crate::graph::tests::dimensioned_harness();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ServiceGraphCollector::new(h.graph.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"traces_service_graph_request_total{client="a",server="b",connection_type="",client_k8s_namespace_name="shop",server_k8s_namespace_name="pay",client_deployment_environment="",server_deployment_environment="",failed="false"} 1"#,
            r#"traces_service_graph_request_total{client="a",server="b",connection_type="",client_k8s_namespace_name="staging",server_k8s_namespace_name="pay",client_deployment_environment="",server_deployment_environment="",failed="false"} 1"#,
            r#"traces_service_graph_request_total{client="user",server="b",connection_type="virtual_node",client_k8s_namespace_name="",server_k8s_namespace_name="",client_deployment_environment="",server_deployment_environment="prod",failed="false"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
