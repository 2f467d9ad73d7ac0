//! The admin HTTP API: the one module that speaks axum. `/v1` behind a bearer token;
//! `/metrics`, `/healthz` and `/readyz` open.

mod auth;
mod deliveries;
mod error;
mod extract;
mod params;
mod schema;
mod tokens;
mod ui;
mod webhooks;

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, middleware, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use auth::Principal;
pub use error::ApiError;

use crate::{
    broker::Publisher,
    domain::Catalog,
    pipeline::Subscriptions,
    readiness::{Dependency, Readiness, WorkerState},
    sender::TargetGuard,
    storage::Storage,
};

pub struct ApiState {
    pub storage: Storage,
    /// The worker's routing cache: dropped here on every change this API makes, so the
    /// change applies to the very next event (other processes learn it by NOTIFY).
    pub subscriptions: Arc<Subscriptions>,
    pub catalog: Catalog,
    pub admin_token: String,
    /// The SSRF guard: a webhook URL is checked with it when saved.
    pub targets: TargetGuard,
    pub metrics: PrometheusHandle,
    /// The worker's current publisher: `Some` while its broker connection and consumers are
    /// up, set by the supervisor. Manual retries publish through it.
    pub publisher: tokio::sync::watch::Receiver<Option<Publisher>>,
    /// Whether the worker's consumers are subscribed, and which outage paused them.
    pub readiness: Readiness,
}

/// Every `/v1` route, each documented by its handler's `#[utoipa::path]`: the router and the
/// OpenAPI document come from this one list, so they cannot drift apart.
fn v1_routes() -> OpenApiRouter<Arc<ApiState>> {
    use {deliveries as d, tokens as t, webhooks as w};
    OpenApiRouter::new()
        .routes(routes!(auth::session))
        .routes(routes!(w::event_types))
        .routes(routes!(w::list))
        .routes(routes!(w::create))
        .routes(routes!(w::get))
        .routes(routes!(w::update))
        .routes(routes!(w::delete))
        .routes(routes!(w::rotate_secret))
        .routes(routes!(w::public_key))
        .routes(routes!(w::endpoint_health))
        .routes(routes!(d::webhook_attempts))
        .routes(routes!(d::recover))
        .routes(routes!(d::list))
        .routes(routes!(d::get))
        .routes(routes!(d::retry))
        .routes(routes!(d::attempt))
        .routes(routes!(t::issue))
        .routes(routes!(t::list))
        .routes(routes!(t::revoke))
}

/// The routes outside `/v1`, open to anyone.
fn operations_routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(render_metrics))
        .routes(routes!(healthz))
        .routes(routes!(readiness))
}

/// The OpenAPI 3.1 document of the whole API, served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let (_, v1) = v1_routes().split_for_parts();
    let (_, operations) = operations_routes().split_for_parts();
    let mut document = schema::ApiDoc::openapi().nest("/v1", v1);
    document.merge(operations);
    let mut document = serde_json::to_value(document).expect("the document serializes");
    schema::add_links(&mut document);
    document
}

/// The method and path (under `/v1`) of every route the API serves there, from the document.
pub fn v1_route_table() -> Vec<(axum::http::Method, String)> {
    let (_, v1) = v1_routes().split_for_parts();
    v1.paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PATCH", &item.patch),
                ("PUT", &item.put),
                ("DELETE", &item.delete),
            ]
            .into_iter()
            .filter(|(_, operation)| operation.is_some())
            .filter_map(|(method, _)| Some((method.parse().ok()?, path.clone())))
        })
        .collect()
}

pub fn router(state: Arc<ApiState>) -> Router {
    let (v1, _) = v1_routes().split_for_parts();
    let v1 = v1
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let (operations, _) = operations_routes().split_for_parts();
    // Serialized once: each request shares the bytes.
    let document = axum::body::Bytes::from(openapi().to_string());
    Router::new()
        .nest("/v1", v1)
        .merge(operations)
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document,
                    )
                }
            }),
        )
        .merge(ui::router())
        .with_state(state)
}

/// Liveness: 200 while the process serves.
#[utoipa::path(get, operation_id = "healthz",
    path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// How long a scrape waits for the database's gauges before rendering without them (they
/// then keep their last values), so /metrics answers while the database does not.
const DATABASE_GAUGES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Prometheus text exposition of the worker's metrics.
#[utoipa::path(get, operation_id = "getMetrics",
    path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain")))]
async fn render_metrics(State(state): State<Arc<ApiState>>) -> String {
    match tokio::time::timeout(DATABASE_GAUGES_TIMEOUT, state.storage.gauges()).await {
        Ok(Ok(gauges)) => crate::metrics::database_gauges(&gauges),
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the database's gauges"),
        Err(_) => tracing::debug!("reading the database's gauges timed out"),
    }
    state.metrics.run_upkeep();
    state.metrics.render()
}

/// How long readiness waits for the database to answer.
const READINESS_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Ready while every consumer is subscribed and the database answers within a second; else
/// 503, naming what is down: `consumers` (starting, or paused), and `database` or `broker`
/// (an outage the worker is waiting out, or a failed ping).
#[utoipa::path(get, operation_id = "readyz",
    path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = schema::Readiness),
    (status = 503, description = "Not ready; `down` names why", body = schema::Readiness)))]
async fn readiness(State(state): State<Arc<ApiState>>) -> (StatusCode, Json<schema::Readiness>) {
    let worker = state.readiness.state();
    let database = matches!(
        tokio::time::timeout(READINESS_PING_TIMEOUT, state.storage.ping()).await,
        Ok(true)
    );
    let down = readiness_problems(worker, database);
    let status = if down.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let ready = down.is_empty();
    (status, Json(schema::Readiness { ready, down }))
}

/// What keeps the worker from being ready, in a fixed order.
fn readiness_problems(worker: WorkerState, database_answers: bool) -> Vec<&'static str> {
    let mut down = Vec::new();
    if !worker.consuming {
        down.push("consumers");
    }
    if !database_answers || worker.outage == Some(Dependency::Database) {
        down.push("database");
    }
    if worker.outage == Some(Dependency::Broker) {
        down.push("broker");
    }
    down
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_what_is_down() {
        let up = WorkerState {
            consuming: true,
            outage: None,
        };
        let starting = WorkerState::default();
        let paused = |dependency| WorkerState {
            consuming: false,
            outage: Some(dependency),
        };
        let empty: [&str; 0] = [];
        assert_eq!(readiness_problems(up, true), empty);
        assert_eq!(readiness_problems(up, false), ["database"]);
        assert_eq!(readiness_problems(starting, true), ["consumers"]);
        assert_eq!(
            readiness_problems(paused(Dependency::Database), true),
            ["consumers", "database"],
            "the worker waits out an outage the ping no longer sees"
        );
        assert_eq!(
            readiness_problems(paused(Dependency::Broker), true),
            ["consumers", "broker"]
        );
    }
}
