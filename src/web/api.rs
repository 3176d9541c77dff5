//! The graph API: `/api/v1/graph` (JSON, DOT, Mermaid), Jaeger's
//! `/api/dependencies`, and for the page `/api/v1/series` (an edge's or a
//! node's numbers over time) and `/api/v1/diff` (what changed against a
//! baseline window). Windows reach `storage.retention` back: memory answers
//! recent minutes, the history store the rest; store reads run on the
//! blocking pool.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::document::{Dependencies, DiffDocument, GraphDocument, SeriesDocument};
use super::render;
use crate::graph::TimeWindow;
use crate::graph::aggregate::Selection;
use crate::graph::diff::{self, Thresholds};
use crate::graph::edge::ConnectionType;
use crate::graph::topology::Topology;
use crate::store::{History, Reach, StoreError};

/// Window when the query names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Why a query failed: 400 for a bad parameter, 500 when the store fails;
/// the body is `{"error": message}` either way.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter does not parse.
    #[error("invalid {param}: {reason}")]
    BadParam {
        /// The parameter.
        param: &'static str,
        /// Why.
        reason: String,
    },
    /// The history store failed to answer.
    #[error("reading history: {}", crate::store::error_chain(.0))]
    Store(#[from] StoreError),
    /// The query task died.
    #[error("query failed: {0}")]
    Task(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::BadParam { .. } => StatusCode::BAD_REQUEST,
            Self::Store(_) | Self::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "api query failed");
        }
        (status, Json(serde_json::json!({"error": self.to_string()}))).into_response()
    }
}

/// Runs a store-reading query on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => Ok(result?),
        Err(err) => Err(ApiError::Task(err.to_string())),
    }
}

/// Query of `/api/v1/graph*`.
#[derive(Debug, Default, Deserialize)]
pub struct GraphQuery {
    window: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

fn bad(param: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError::BadParam {
        param,
        reason: reason.into(),
    }
}

fn parse_duration(param: &'static str, text: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(text).map_err(|err| {
        bad(
            param,
            format!("{err}; expected a duration such as 30s, 5m, 2h or 1d"),
        )
    })
}

fn parse_time(param: &'static str, text: &str) -> Result<SystemTime, ApiError> {
    humantime::parse_rfc3339_weak(text).map_err(|err| {
        bad(
            param,
            format!("{err}; expected RFC 3339 in UTC such as 2026-01-02T15:04:05Z"),
        )
    })
}

impl GraphQuery {
    /// Resolves the window: `end` defaults to now, `start` to `end - window`.
    pub fn resolve(&self, now: SystemTime, reach: Reach) -> Result<TimeWindow, ApiError> {
        let window = match self.window.as_deref() {
            None | Some("") => DEFAULT_WINDOW,
            Some(text) => parse_duration("window", text)?,
        };
        if window.is_zero() {
            return Err(bad("window", "must be longer than zero"));
        }
        let end = match self.end.as_deref() {
            Some(text) => parse_time("end", text)?,
            None => now,
        };
        let start = match self.start.as_deref() {
            Some(text) => parse_time("start", text)?,
            None => end.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH),
        };
        if start >= end {
            return Err(bad("start", "must be before end"));
        }
        check_reach("end", end, now, reach)?;
        Ok(TimeWindow { start, end })
    }
}

/// Refuses a window that ends before the oldest data kept.
fn check_reach(
    param: &'static str,
    end: SystemTime,
    now: SystemTime,
    reach: Reach,
) -> Result<(), ApiError> {
    let oldest = now
        .checked_sub(reach.duration)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if end <= oldest {
        return Err(bad(
            param,
            format!(
                "the window ends before the oldest data kept ({}, {} = {})",
                humantime::format_rfc3339_seconds(oldest),
                reach.key,
                humantime::format_duration(reach.duration)
            ),
        ));
    }
    Ok(())
}

/// The graph over the query's window, as every `/api/v1/graph*` view needs it.
async fn snapshot(history: History, query: &GraphQuery) -> Result<Topology, ApiError> {
    let now = SystemTime::now();
    let window = query.resolve(now, history.reach())?;
    blocking(move || history.snapshot(window, now)).await
}

pub(super) async fn graph_json(
    State(history): State<History>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let topology = snapshot(history, &query).await?;
    Ok(Json(GraphDocument::from(&topology)).into_response())
}

pub(super) async fn graph_dot(
    State(history): State<History>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let body = render::dot(&snapshot(history, &query).await?);
    Ok((
        [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
        body,
    )
        .into_response())
}

pub(super) async fn graph_mermaid(
    State(history): State<History>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let body = render::mermaid(&snapshot(history, &query).await?);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// Query of Jaeger's `/api/dependencies`, both in milliseconds.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DependenciesQuery {
    end_ts: Option<String>,
    lookback: Option<String>,
}

impl DependenciesQuery {
    /// `endTs` defaults to now and `lookback` to the retention.
    pub fn resolve(&self, now: SystemTime, retention: Duration) -> Result<TimeWindow, ApiError> {
        let millis = |param: &'static str, text: &str| {
            text.parse::<u64>()
                .map_err(|_| bad(param, "expected milliseconds as a non-negative integer"))
        };
        let end = match self.end_ts.as_deref() {
            Some(text) => SystemTime::UNIX_EPOCH + Duration::from_millis(millis("endTs", text)?),
            None => now,
        };
        let lookback = match self.lookback.as_deref() {
            Some(text) => Duration::from_millis(millis("lookback", text)?),
            None => retention,
        };
        if lookback.is_zero() {
            return Err(bad("lookback", "must be greater than zero"));
        }
        let start = end.checked_sub(lookback).unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(TimeWindow { start, end })
    }
}

pub(super) async fn dependencies(
    State(history): State<History>,
    Query(query): Query<DependenciesQuery>,
) -> Result<Response, ApiError> {
    let now = SystemTime::now();
    // Jaeger's UI always sends lookback; the default stays what memory holds.
    let window = query.resolve(now, history.graph().config().retention)?;
    let topology = blocking(move || history.snapshot(window, now)).await?;
    Ok(Json(Dependencies::from(&topology)).into_response())
}

/// Query of `/api/v1/series`: an edge (`client`, `server`, optional
/// `connection_type`) or a node (`node`), and a window as for the graph.
#[derive(Debug, Default, Deserialize)]
pub struct SeriesQuery {
    client: Option<String>,
    server: Option<String>,
    connection_type: Option<String>,
    node: Option<String>,
    #[serde(flatten)]
    window: GraphQuery,
}

impl SeriesQuery {
    /// What to read, refusing incomplete or mixed selections.
    pub fn selection(&self) -> Result<Selection<'_>, ApiError> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.is_empty())
        }
        let connection_type = match self.connection_type.as_deref() {
            None => None,
            Some(name) => Some(ConnectionType::from_name(name).ok_or_else(|| {
                bad(
                    "connection_type",
                    format!(
                        "{name:?} is not one of direct, database, messaging_system, virtual_node"
                    ),
                )
            })?),
        };
        match (given(&self.node), given(&self.client), given(&self.server)) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(bad(
                "node",
                "give either node, or client and server, not both",
            )),
            (Some(node), None, None) => Ok(Selection::Node(node)),
            (None, Some(client), Some(server)) => Ok(Selection::Edge {
                client,
                server,
                connection_type,
            }),
            (None, Some(_), None) => Err(bad("server", "required with client")),
            (None, None, Some(_)) => Err(bad("client", "required with server")),
            (None, None, None) => Err(bad(
                "node",
                "give node=NAME for a node, or client=A&server=B for an edge",
            )),
        }
    }
}

pub(super) async fn series(
    State(history): State<History>,
    Query(query): Query<SeriesQuery>,
) -> Result<Response, ApiError> {
    let now = SystemTime::now();
    query.selection()?;
    let window = query.window.resolve(now, history.reach())?;
    let series = blocking(move || {
        let selection = query.selection().expect("checked above");
        history.series(&selection, window, now)
    })
    .await?;
    Ok(Json(SeriesDocument::from(&series)).into_response())
}

/// Baseline when the query names none: the same window a day earlier.
pub const DEFAULT_BASELINE_OFFSET: Duration = Duration::from_secs(86_400);

/// Query of `/api/v1/diff`.
#[derive(Debug, Default, Deserialize)]
pub struct DiffQuery {
    #[serde(flatten)]
    window: GraphQuery,
    baseline_start: Option<String>,
    baseline_offset: Option<String>,
    error_threshold: Option<String>,
    latency_threshold: Option<String>,
    min_requests: Option<String>,
}

impl DiffQuery {
    /// The current window, the baseline window of the same length, and
    /// the thresholds.
    pub fn resolve(
        &self,
        now: SystemTime,
        reach: Reach,
    ) -> Result<(TimeWindow, TimeWindow, Thresholds), ApiError> {
        let current = self.window.resolve(now, reach)?;
        let length = current
            .end
            .duration_since(current.start)
            .unwrap_or_default();
        let given = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        let (start, param) = match (given(&self.baseline_start), given(&self.baseline_offset)) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "baseline_start",
                    "give baseline_start or baseline_offset, not both",
                ));
            }
            (Some(text), None) => (parse_time("baseline_start", &text)?, "baseline_start"),
            (None, offset) => {
                let offset = match offset {
                    Some(text) => parse_duration("baseline_offset", &text)?,
                    None => DEFAULT_BASELINE_OFFSET,
                };
                if offset.is_zero() {
                    return Err(bad("baseline_offset", "must be longer than zero"));
                }
                let start = current
                    .start
                    .checked_sub(offset)
                    .ok_or_else(|| bad("baseline_offset", "reaches before 1970"))?;
                (start, "baseline_offset")
            }
        };
        let baseline = TimeWindow {
            start,
            end: start + length,
        };
        check_reach(param, baseline.end, now, reach)?;
        let defaults = Thresholds::default();
        let fraction = |param: &'static str, text: &Option<String>, default: f64, max: f64| {
            match given(text) {
                None => Ok(default),
                Some(text) => match text.parse::<f64>() {
                    Ok(v) if v.is_finite() && (0.0..=max).contains(&v) => Ok(v),
                    _ => Err(bad(param, format!("expected a number from 0 to {max}"))),
                },
            }
        };
        let min_requests = match given(&self.min_requests) {
            None => defaults.min_requests,
            Some(text) => text
                .parse()
                .map_err(|_| bad("min_requests", "expected a non-negative integer"))?,
        };
        let thresholds = Thresholds {
            error_rate: fraction(
                "error_threshold",
                &self.error_threshold,
                defaults.error_rate,
                1.0,
            )?,
            latency: fraction(
                "latency_threshold",
                &self.latency_threshold,
                defaults.latency,
                1000.0,
            )?,
            min_requests,
        };
        Ok((current, baseline, thresholds))
    }
}

pub(super) async fn diff(
    State(history): State<History>,
    Query(query): Query<DiffQuery>,
) -> Result<Response, ApiError> {
    let now = SystemTime::now();
    let (current, baseline, thresholds) = query.resolve(now, history.reach())?;
    let (now_graph, then_graph) = blocking(move || {
        Ok((
            history.snapshot(current, now)?,
            history.snapshot(baseline, now)?,
        ))
    })
    .await?;
    let edges = diff::diff(&now_graph, &then_graph, &thresholds);
    Ok(Json(DiffDocument::new(
        now_graph.window,
        then_graph.window,
        &edges,
    ))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Reach = Reach {
        duration: Duration::from_secs(3600),
        key: "graph.retention",
    };

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn query(window: Option<&str>, start: Option<&str>, end: Option<&str>) -> GraphQuery {
        GraphQuery {
            window: window.map(Into::into),
            start: start.map(Into::into),
            end: end.map(Into::into),
        }
    }

    #[test]
    fn window_defaults_and_durations() {
        let w = query(None, None, None).resolve(now(), HOUR).unwrap();
        assert_eq!(w.end, now());
        assert_eq!(w.start, now() - DEFAULT_WINDOW);
        let w = query(Some("90s"), None, None).resolve(now(), HOUR).unwrap();
        assert_eq!(w.seconds(), 90.0);
        let w = query(
            None,
            Some("2027-01-15T07:30:00Z"),
            Some("2027-01-15T07:45:00Z"),
        )
        .resolve(now(), HOUR)
        .unwrap();
        assert_eq!(w.seconds(), 900.0);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let err = query(Some("5 parsecs"), None, None)
            .resolve(now(), HOUR)
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid window:"), "{err}");
        let err = query(Some("0s"), None, None)
            .resolve(now(), HOUR)
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid window: must be longer than zero");
        let err = query(None, Some("yesterday"), None)
            .resolve(now(), HOUR)
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid start:"), "{err}");
        let err = query(
            None,
            Some("2027-01-15T08:00:00Z"),
            Some("2027-01-15T07:00:00Z"),
        )
        .resolve(now(), HOUR)
        .unwrap_err();
        assert_eq!(err.to_string(), "invalid start: must be before end");
        let err = query(None, None, Some("2020-01-01T00:00:00Z"))
            .resolve(now(), HOUR)
            .unwrap_err();
        assert!(err.to_string().contains("graph.retention = 1h"), "{err}");
    }

    #[test]
    fn jaeger_query_in_milliseconds() {
        let q = DependenciesQuery {
            end_ts: Some("1800000000000".into()),
            lookback: Some("60000".into()),
        };
        let w = q.resolve(now(), HOUR.duration).unwrap();
        assert_eq!(w.end, now());
        assert_eq!(w.seconds(), 60.0);
        let q = DependenciesQuery {
            end_ts: Some("-5".into()),
            lookback: None,
        };
        assert!(
            q.resolve(now(), HOUR.duration)
                .unwrap_err()
                .to_string()
                .starts_with("invalid endTs")
        );
    }
}
