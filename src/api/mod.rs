//! The admin HTTP API: the one module that speaks axum. `/v1` behind a bearer token;
//! `/metrics`, `/healthz` and `/readyz` open.

mod deliveries;
mod error;
mod extract;
mod webhooks;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header::AUTHORIZATION},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use metrics_exporter_prometheus::PrometheusHandle;
use subtle::ConstantTimeEq;

pub use error::ApiError;

use crate::{broker::Publisher, domain::Catalog, pipeline::Subscriptions, storage::Storage};

pub struct ApiState {
    pub storage: Storage,
    /// The worker's routing cache: dropped here on every change this API makes, so the
    /// change applies to the very next event (other processes learn it by NOTIFY).
    pub subscriptions: Arc<Subscriptions>,
    pub catalog: Catalog,
    pub admin_token: String,
    pub allow_private_targets: bool,
    pub metrics: PrometheusHandle,
    /// The worker's current publisher: `Some` while its broker connection and consumers are
    /// up, set by the supervisor. Manual retries publish through it.
    pub publisher: tokio::sync::watch::Receiver<Option<Publisher>>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = Router::new()
        .route("/event-types", get(webhooks::event_types))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route("/webhooks/{id}/attempts", get(deliveries::webhook_attempts))
        .route("/webhooks/{id}/recover", post(deliveries::recover))
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/{id}", get(deliveries::get))
        .route("/deliveries/{id}/retry", post(deliveries::retry))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/v1", v1)
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .with_state(state)
}

async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time, so response timing does not leak how much of a guess was right.
    if bool::from(presented.as_bytes().ct_eq(state.admin_token.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// How long a scrape waits for the parking lot's count before rendering without it (the
/// gauge then keeps its last value), so /metrics answers while the database does not.
const PARKED_COUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

async fn render_metrics(State(state): State<Arc<ApiState>>) -> String {
    match tokio::time::timeout(PARKED_COUNT_TIMEOUT, state.storage.count_parked()).await {
        Ok(Ok(parked)) => crate::metrics::parked(parked),
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot count parked deliveries"),
        Err(_) => tracing::debug!("counting parked deliveries timed out"),
    }
    state.metrics.run_upkeep();
    state.metrics.render()
}

/// Ready when the consumers are connected to the broker and the database answers.
async fn readiness(State(state): State<Arc<ApiState>>) -> (StatusCode, &'static str) {
    let broker = state.publisher.borrow().is_some();
    let database = state.storage.ping().await;
    match (broker, database) {
        (true, true) => (StatusCode::OK, "ready"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "broker unavailable"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
    }
}
