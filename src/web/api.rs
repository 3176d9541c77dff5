//! The graph API: `/api/v1/graph` (JSON, DOT, Mermaid) and Jaeger's
//! `/api/dependencies`.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::graph::topology::Topology;
use crate::graph::{Graph, TimeWindow};

/// Window when the query names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Why a query was refused; answered as 400 with the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// A parameter does not parse.
    #[error("invalid {param}: {reason}")]
    BadParam {
        /// The parameter.
        param: &'static str,
        /// Why.
        reason: String,
    },
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": self.to_string()})),
        )
            .into_response()
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
    pub fn resolve(&self, now: SystemTime, retention: Duration) -> Result<TimeWindow, ApiError> {
        let window = match self.window.as_deref() {
            None | Some("") => DEFAULT_WINDOW,
            Some(text) => humantime::parse_duration(text).map_err(|err| {
                bad(
                    "window",
                    format!("{err}; expected a duration such as 30s, 5m or 2h"),
                )
            })?,
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
        let oldest = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        if end <= oldest {
            return Err(bad(
                "end",
                format!(
                    "the window ends before the oldest data kept ({}, graph.retention = {})",
                    humantime::format_rfc3339_seconds(oldest),
                    humantime::format_duration(retention)
                ),
            ));
        }
        Ok(TimeWindow { start, end })
    }
}

/// The graph over the query's window, as every `/api/v1/graph*` view needs it.
fn snapshot(graph: &Graph, query: &GraphQuery) -> Result<Topology, ApiError> {
    let window = query.resolve(SystemTime::now(), graph.config().retention)?;
    Ok(graph.snapshot(window))
}

pub(super) async fn graph_json(
    State(graph): State<Graph>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(snapshot(&graph, &query)?.to_json()).into_response())
}

pub(super) async fn graph_dot(
    State(graph): State<Graph>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let body = snapshot(&graph, &query)?.to_dot();
    Ok((
        [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
        body,
    )
        .into_response())
}

pub(super) async fn graph_mermaid(
    State(graph): State<Graph>,
    Query(query): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let body = snapshot(&graph, &query)?.to_mermaid();
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
    State(graph): State<Graph>,
    Query(query): Query<DependenciesQuery>,
) -> Result<Response, ApiError> {
    let window = query.resolve(SystemTime::now(), graph.config().retention)?;
    let data = graph.snapshot(window).dependencies();
    Ok(Json(serde_json::json!({ "data": data })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

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
        let w = q.resolve(now(), HOUR).unwrap();
        assert_eq!(w.end, now());
        assert_eq!(w.seconds(), 60.0);
        let q = DependenciesQuery {
            end_ts: Some("-5".into()),
            lookback: None,
        };
        assert!(
            q.resolve(now(), HOUR)
                .unwrap_err()
                .to_string()
                .starts_with("invalid endTs")
        );
    }
}
