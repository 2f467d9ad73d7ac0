//! The delivery log and recovery: attempts, deliveries, manual retry, recover.

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState,
    auth::Principal,
    error::ApiError,
    extract::{ApiJson, ApiPath, ApiQuery},
    params::{
        AttemptCursor, DeliveryCursor, EventTypeText, PageLimit, StatusName, Time, WebhookFilter,
    },
    schema::{
        Attempt, AttemptPage, CommonErrors, Delivery, DeliveryDetail, DeliveryPage,
        DeliveryStatusName, Recovered, Retried,
    },
    webhooks::{WebhookPath, owned_webhook},
};
use crate::{
    broker::Publisher,
    domain::{CompanyId, DeliveryId},
    recovery::{self, RecoveryError, RetryResult},
    storage::{DeliveryFilter, ReplayScope, Window},
};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptsQuery {
    /// Attempts per page.
    #[param(value_type = Option<PageLimit>)]
    limit: Option<PageLimit>,
    /// The `next_before` of the previous page.
    #[param(value_type = Option<i64>)]
    before: Option<AttemptCursor>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// One of `webhook_id` and `company_id` is required (a company token's own company is
    /// implied).
    #[param(value_type = Option<String>, format = Uuid)]
    webhook_id: Option<WebhookFilter>,
    #[param(value_type = Option<String>, pattern = "^[!-~]{1,255}$")]
    company_id: Option<CompanyId>,
    #[param(value_type = Option<DeliveryStatusName>)]
    status: Option<StatusName>,
    /// An exact event type.
    #[param(value_type = Option<String>, pattern = "^[!-~]{1,255}$")]
    event_type: Option<EventTypeText>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<Time>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<Time>,
    /// The `next_before` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    before: Option<DeliveryCursor>,
    /// Deliveries per page.
    #[param(value_type = Option<PageLimit>)]
    limit: Option<PageLimit>,
}

/// `?company_id=` on single-delivery routes: when given, a delivery of another company is
/// reported as not found (as it always is to a company token).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScopeQuery {
    #[param(value_type = Option<String>, pattern = "^[!-~]{1,255}$")]
    company_id: Option<CompanyId>,
}

/// The `{id}` of a delivery route.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "describes the path parameter in the OpenAPI document"
)]
pub struct DeliveryPath {
    /// The delivery's id.
    #[param(value_type = String, format = Uuid)]
    id: String,
}

/// The `{id}` and `{number}` of one attempt.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "describes the path parameters in the OpenAPI document"
)]
pub struct AttemptPath {
    /// The delivery's id.
    #[param(value_type = String, format = Uuid)]
    id: String,
    /// The attempt's number, from 1.
    #[param(value_type = i32, minimum = 1)]
    number: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    /// Failed deliveries created at or after this time (RFC 3339) are retried.
    #[schema(value_type = String, required = true, format = DateTime)]
    since: Option<Time>,
    /// And before this one, if given.
    #[schema(value_type = Option<String>, format = DateTime)]
    until: Option<Time>,
}

/// A checked time window: `until` must not be before `since`.
fn window(since: Option<Time>, until: Option<Time>) -> Result<Window, ApiError> {
    let window = Window {
        since: since.map(|t| t.0),
        until: until.map(|t| t.0),
    };
    if let (Some(since), Some(until)) = (window.since, window.until)
        && until < since
    {
        return Err(ApiError::invalid_field(
            "until",
            "until must not be before since",
        ));
    }
    Ok(window)
}

fn delivery_id(id: &str) -> Result<DeliveryId, ApiError> {
    DeliveryId::parse(id).map_err(|_| ApiError::not_found("delivery"))
}

/// The delivery `found`, unless it does not exist, `?company_id=` names another company, or
/// the caller may not see it: all are "not found", so ids of other tenants reveal nothing.
fn scoped<T>(
    found: Option<T>,
    principal: &Principal,
    scope: ScopeQuery,
    owner: impl Fn(&T) -> &str,
) -> Result<T, ApiError> {
    let company = scope.company_id;
    found
        .filter(|d| company.as_ref().is_none_or(|c| c.as_str() == owner(d)))
        .filter(|d| principal.may_see(owner(d)))
        .ok_or_else(|| ApiError::not_found("delivery"))
}

/// The webhook's latest attempts, newest first; bodies are previews.
#[utoipa::path(get, operation_id = "listWebhookAttempts",
    path = "/webhooks/{id}/attempts", tag = "deliveries",
    security(("bearer" = [])), params(WebhookPath, AttemptsQuery),
    responses((status = 200, body = AttemptPage), CommonErrors))]
pub async fn webhook_attempts(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<AttemptsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let id = owned_webhook(&state, &principal, &id).await?.id;
    let limit = query.limit.unwrap_or(PageLimit::DEFAULT).0;
    let before = query.before.map(|cursor| cursor.0);
    let data = state.storage.webhook_attempts(id, before, limit).await?;
    let next_before = next_cursor(data.len(), limit, data.last().map(|a| a.id));
    let data = data.into_iter().map(Attempt::from).collect();
    Ok(Json(AttemptPage { data, next_before }))
}

/// The cursor for the next page, when this page was full.
fn next_cursor<T>(len: usize, limit: i64, last: Option<T>) -> Option<T> {
    if i64::try_from(len).unwrap_or(i64::MAX) >= limit {
        last
    } else {
        None
    }
}

/// Deliveries, newest first.
#[utoipa::path(get, operation_id = "listDeliveries",
    path = "/deliveries", tag = "deliveries", security(("bearer" = [])),
    params(DeliveriesQuery),
    responses((status = 200, body = DeliveryPage), CommonErrors))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let window = window(query.since, query.until)?;
    let filter = DeliveryFilter {
        webhook_id: query.webhook_id.map(|id| id.0),
        // A company token lists its own company's deliveries only, whatever else it filters by.
        company_id: principal.acting_for(query.company_id)?,
        status: query.status.map(|status| status.0),
        event_type: query.event_type.map(|event_type| event_type.0),
        since: window.since,
        until: window.until,
        before: query.before.map(|cursor| cursor.0),
        limit: query.limit.unwrap_or(PageLimit::DEFAULT).0,
    };
    if filter.webhook_id.is_none() && filter.company_id.is_none() {
        return Err(ApiError::bad_request(
            "give webhook_id or company_id to scope the listing",
        ));
    }
    let data = state.storage.deliveries(&filter).await?;
    let next_before = next_cursor(data.len(), filter.limit, data.last().map(|d| d.id.0));
    let data = data.into_iter().map(Delivery::from).collect();
    Ok(Json(DeliveryPage { data, next_before }))
}

/// One delivery with all its attempts (bodies as previews).
#[utoipa::path(get, operation_id = "getDelivery",
    path = "/deliveries/{id}", tag = "deliveries", security(("bearer" = [])),
    params(DeliveryPath, ScopeQuery),
    responses((status = 200, body = DeliveryDetail), CommonErrors))]
pub async fn get(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let id = delivery_id(&id)?;
    let delivery = scoped(state.storage.delivery(id).await?, &principal, scope, |d| {
        d.company_id.as_str()
    })?;
    let attempts = state.storage.delivery_attempts(id).await?;
    Ok(Json(DeliveryDetail {
        delivery: delivery.into(),
        attempts: attempts.into_iter().map(Attempt::from).collect(),
    }))
}

/// One attempt of a delivery, with its request and response bodies whole.
#[utoipa::path(get, operation_id = "getAttempt",
    path = "/deliveries/{id}/attempts/{number}", tag = "deliveries",
    security(("bearer" = [])), params(AttemptPath, ScopeQuery),
    responses((status = 200, body = Attempt), CommonErrors))]
pub async fn attempt(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath((id, number)): ApiPath<(String, String)>,
    ApiQuery(scope): ApiQuery<ScopeQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let id = delivery_id(&id)?;
    let number: i32 = number
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::not_found("attempt"))?;
    scoped(state.storage.delivery(id).await?, &principal, scope, |d| {
        d.company_id.as_str()
    })?;
    let attempt = state
        .storage
        .delivery_attempt(id, number)
        .await?
        .ok_or_else(|| ApiError::not_found("attempt"))?;
    Ok(Json(Attempt::from(attempt)))
}

fn publisher(state: &ApiState) -> Result<Publisher, ApiError> {
    state
        .publisher
        .borrow()
        .clone()
        .ok_or_else(|| ApiError::unavailable("the broker is unavailable, try again"))
}

impl From<RecoveryError> for ApiError {
    fn from(error: RecoveryError) -> Self {
        match error {
            RecoveryError::Storage(e) => e.into(),
            other => {
                tracing::error!(error = %other, "manual retry failed");
                ApiError::unavailable("could not enqueue the retry, try again")
            }
        }
    }
}

/// Sends the delivery again now: same event id and body, fresh timestamp and signature.
#[utoipa::path(post, operation_id = "retryDelivery",
    path = "/deliveries/{id}/retry", tag = "deliveries",
    security(("bearer" = [])), params(DeliveryPath, ScopeQuery),
    responses((status = 202, body = Retried), CommonErrors))]
pub async fn retry(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let id = delivery_id(&id)?;
    let target = scoped(
        state.storage.retry_target(id).await?,
        &principal,
        scope,
        |t| t.company_id.as_str(),
    )?;
    let result = recovery::retry_delivery(&state.storage, &publisher(&state)?, &target).await?;
    let enqueued = result == RetryResult::Enqueued;
    Ok((
        StatusCode::ACCEPTED,
        Json(Retried {
            delivery_id: id.0,
            enqueued,
        }),
    ))
}

/// Re-enqueues every Failed delivery of the webhook created in the window.
#[utoipa::path(post, operation_id = "recoverWebhook",
    path = "/webhooks/{id}/recover", tag = "deliveries",
    security(("bearer" = [])), params(WebhookPath), request_body = RecoverBody,
    responses((status = 202, body = Recovered), CommonErrors))]
pub async fn recover(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RecoverBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = owned_webhook(&state, &principal, &id).await?.id;
    if body.since.is_none() {
        return Err(ApiError::invalid_field("since", "since is required"));
    }
    let window = window(body.since, body.until)?;
    let scope = ReplayScope::Webhook(id);
    let count =
        recovery::replay_failed(&state.storage, &publisher(&state)?, &scope, window, |_| {})
            .await?;
    Ok((StatusCode::ACCEPTED, Json(Recovered { enqueued: count })))
}
