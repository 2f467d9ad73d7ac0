//! The admin HTTP API: the one module that speaks axum. `/v1` behind a bearer token;
//! `/metrics`, `/healthz` and `/readyz` open.

mod auth;
mod deliveries;
mod error;
mod extract;
mod tokens;
mod webhooks;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{Method, StatusCode},
    middleware,
    routing::{MethodRouter, delete, get, patch, post},
};
use metrics_exporter_prometheus::PrometheusHandle;

pub use auth::Principal;
pub use error::ApiError;

use crate::{
    broker::Publisher,
    domain::Catalog,
    health::{Dependency, Health, WorkerState},
    pipeline::Subscriptions,
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
    pub health: Health,
}

type Handler = MethodRouter<Arc<ApiState>>;

/// Every `/v1` route with its handler. The router is built from this table and the tests walk
/// it (the tenant-isolation test fails for a route it does not cover).
fn v1_routes() -> Vec<(Method, &'static str, Handler)> {
    use {deliveries as d, tokens as t, webhooks as w};
    vec![
        (Method::GET, "/event-types", get(w::event_types)),
        (Method::GET, "/webhooks", get(w::list)),
        (Method::POST, "/webhooks", post(w::create)),
        (Method::GET, "/webhooks/{id}", get(w::get)),
        (Method::PATCH, "/webhooks/{id}", patch(w::update)),
        (Method::DELETE, "/webhooks/{id}", delete(w::delete)),
        (
            Method::GET,
            "/webhooks/{id}/attempts",
            get(d::webhook_attempts),
        ),
        (Method::POST, "/webhooks/{id}/recover", post(d::recover)),
        (
            Method::POST,
            "/webhooks/{id}/secret/rotate",
            post(w::rotate_secret),
        ),
        (Method::GET, "/webhooks/{id}/public-key", get(w::public_key)),
        (Method::GET, "/deliveries", get(d::list)),
        (Method::GET, "/deliveries/{id}", get(d::get)),
        (Method::POST, "/deliveries/{id}/retry", post(d::retry)),
        (
            Method::GET,
            "/deliveries/{id}/attempts/{number}",
            get(d::attempt),
        ),
        (
            Method::POST,
            "/companies/{company_id}/tokens",
            post(t::issue),
        ),
        (Method::GET, "/companies/{company_id}/tokens", get(t::list)),
        (
            Method::DELETE,
            "/companies/{company_id}/tokens/{token_id}",
            delete(t::revoke),
        ),
    ]
}

/// The method and path (under `/v1`) of every route the API serves.
pub fn v1_route_table() -> Vec<(Method, &'static str)> {
    v1_routes()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = v1_routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .with_state(state)
}

/// How long a scrape waits for the database's gauges before rendering without them (they
/// then keep their last values), so /metrics answers while the database does not.
const DATABASE_GAUGES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

async fn render_metrics(State(state): State<Arc<ApiState>>) -> String {
    match tokio::time::timeout(DATABASE_GAUGES_TIMEOUT, state.storage.gauges()).await {
        Ok(Ok(g)) => {
            crate::metrics::database_gauges(g.parked, g.disabled_webhooks, g.oldest_overdue);
        }
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
async fn readiness(State(state): State<Arc<ApiState>>) -> (StatusCode, Json<serde_json::Value>) {
    let worker = state.health.state();
    let database = matches!(
        tokio::time::timeout(READINESS_PING_TIMEOUT, state.storage.ping()).await,
        Ok(true)
    );
    let down = readiness_problems(worker, database);
    if down.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({"ready": true})))
    } else {
        let body = serde_json::json!({"ready": false, "down": down});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
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
