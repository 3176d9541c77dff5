//! The API server: the graph API, the web map (`/`, [`ui`]), `/healthz`,
//! `/readyz` and `/metrics` (Prometheus text).

pub mod api;
pub mod document;
pub mod health;
pub mod render;
pub mod ui;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::store::History;

/// OpenMetrics text, which Prometheus negotiates and prefers.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether the collector should receive traffic: true once every receiver
/// listens, false again when shutdown begins.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct ApiState {
    registry: Arc<Registry>,
    readiness: Arc<Readiness>,
}

/// Routes of the API port.
pub fn router(registry: Arc<Registry>, readiness: Arc<Readiness>, history: History) -> Router {
    let graph_api = Router::new()
        .route("/api/v1/graph", get(api::graph_json))
        .route("/api/v1/graph.dot", get(api::graph_dot))
        .route("/api/v1/graph.mermaid", get(api::graph_mermaid))
        .route("/api/dependencies", get(api::dependencies))
        .route("/api/v1/series", get(api::series))
        .route("/api/v1/diff", get(api::diff))
        .with_state(history);
    Router::new()
        .merge(graph_api)
        .merge(ui::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ApiState {
            registry,
            readiness,
        })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.readiness.get() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut text = String::with_capacity(16 * 1024);
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {err}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
