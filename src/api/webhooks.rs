//! /v1/webhooks and /v1/event-types.

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::{
    ApiState,
    error::ApiError,
    extract::{ApiJson, ApiPath, ApiQuery, present},
};
use crate::{
    domain::{CompanyId, EndpointUrl, SigningSecret, WebhookId},
    storage::{NewWebhook, Webhook, WebhookChanges},
};

const MAX_NAME_LEN: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    company_id: Option<String>,
    name: Option<String>,
    url: Option<String>,
    events: Option<Vec<String>>,
    secret: Option<String>,
    #[serde(default)]
    generate_secret: bool,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    name: Option<String>,
    url: Option<String>,
    events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    secret: Option<Option<String>>,
    #[serde(default)]
    generate_secret: bool,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    company_id: Option<String>,
}

/// A webhook as the API shows it. The secret is shown only in the response that set it.
#[derive(Serialize)]
pub struct WebhookBody {
    id: WebhookId,
    company_id: CompanyId,
    name: String,
    url: String,
    events: Vec<String>,
    enabled: bool,
    has_secret: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl WebhookBody {
    fn new(webhook: Webhook, reveal_secret: bool) -> Self {
        Self {
            id: webhook.id,
            company_id: webhook.company_id,
            name: webhook.name,
            url: webhook.url.to_string(),
            events: webhook.events,
            enabled: webhook.enabled,
            has_secret: webhook.secret.is_some(),
            secret: webhook
                .secret
                .filter(|_| reveal_secret)
                .map(|s| s.expose().to_owned()),
            created_at: webhook.created_at,
            updated_at: webhook.updated_at,
        }
    }
}

pub async fn event_types(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let categories: Vec<_> = state
        .catalog
        .categories()
        .iter()
        .map(|c| {
            let events: Vec<_> = c.events.iter().map(|e| format!("{}.{e}", c.name)).collect();
            json!({"name": c.name, "events": events})
        })
        .collect();
    let event_types: Vec<_> = state.catalog.event_types().collect();
    Json(json!({"event_types": event_types, "categories": categories}))
}

pub async fn create(
    State(state): State<Arc<ApiState>>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    let company_id = CompanyId::parse(required(body.company_id, "company_id")?)
        .map_err(|e| ApiError::invalid_field("company_id", e.to_string()))?;
    let new = NewWebhook {
        company_id,
        name: check_name(required(body.name, "name")?)?,
        url: state.check_url(&required(body.url, "url")?)?,
        events: state.check_events(required(body.events, "events")?)?,
        secret: choose_secret(body.secret.map(Some), body.generate_secret)?.flatten(),
        enabled: body.enabled.unwrap_or(true),
    };
    let webhook = state.storage.create_webhook(new).await?;
    state
        .subscriptions
        .invalidate(Some(webhook.company_id.as_str()));
    Ok((StatusCode::CREATED, Json(WebhookBody::new(webhook, true))))
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let company = query
        .company_id
        .ok_or(ApiError::missing_parameter("company_id"))?;
    let company = CompanyId::parse(company)
        .map_err(|e| ApiError::invalid_field("company_id", e.to_string()))?;
    let webhooks = state.storage.company_webhooks(&company).await?;
    let data: Vec<_> = webhooks
        .into_iter()
        .map(|w| WebhookBody::new(w, false))
        .collect();
    Ok(Json(json!({ "data": data })))
}

pub async fn get(
    State(state): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let webhook = state
        .storage
        .webhook(webhook_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(Json(WebhookBody::new(webhook, false)))
}

pub async fn update(
    State(state): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    let id = webhook_id(&id)?;
    let secret = choose_secret(body.secret, body.generate_secret)?;
    let reveal = secret.as_ref().is_some_and(Option::is_some);
    let changes = WebhookChanges {
        name: body.name.map(check_name).transpose()?,
        url: body.url.map(|u| state.check_url(&u)).transpose()?,
        events: body.events.map(|e| state.check_events(e)).transpose()?,
        secret,
        enabled: body.enabled,
    };
    let webhook = state
        .storage
        .update_webhook(id, changes)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    state
        .subscriptions
        .invalidate(Some(webhook.company_id.as_str()));
    Ok(Json(WebhookBody::new(webhook, reveal)))
}

pub async fn delete(
    State(state): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let company = state.storage.delete_webhook(webhook_id(&id)?).await?;
    let company = company.ok_or_else(|| ApiError::not_found("webhook"))?;
    state.subscriptions.invalidate(Some(&company));
    Ok(StatusCode::NO_CONTENT)
}

fn webhook_id(id: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(id).map_err(|_| ApiError::not_found("webhook"))
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid_field(field, format!("{field} is required")))
}

/// A label for people: 1 to 200 characters, none of them control characters (PostgreSQL
/// refuses NUL in text, and a newline or escape in a name breaks every list that shows it).
fn check_name(name: String) -> Result<String, ApiError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            "name",
            format!("name must be 1 to {MAX_NAME_LEN} characters, none of them control characters"),
        ));
    }
    Ok(name)
}

/// `secret` as given (`Some(None)` removes it), or a generated one; not both.
fn choose_secret(
    given: Option<Option<String>>,
    generate: bool,
) -> Result<Option<Option<SigningSecret>>, ApiError> {
    let invalid = |m: String| ApiError::invalid_field("secret", m);
    match (given, generate) {
        (Some(Some(_)), true) => Err(invalid(
            "give a secret or set generate_secret, not both".into(),
        )),
        (_, true) => Ok(Some(Some(SigningSecret::generate()))),
        (Some(Some(text)), false) => SigningSecret::parse(&text)
            .map(|s| Some(Some(s)))
            .map_err(|e| invalid(format!("secret {e}"))),
        (Some(None), false) => Ok(Some(None)),
        (None, false) => Ok(None),
    }
}

impl ApiState {
    fn check_url(&self, url: &str) -> Result<EndpointUrl, ApiError> {
        EndpointUrl::parse(url, self.allow_private_targets)
            .map_err(|e| ApiError::invalid_field("url", format!("url {e}")))
    }

    fn check_events(&self, events: Vec<String>) -> Result<Vec<String>, ApiError> {
        if events.is_empty() {
            return Err(ApiError::invalid_field(
                "events",
                "select at least one event",
            ));
        }
        let mut checked: Vec<String> = Vec::with_capacity(events.len());
        for entry in events {
            self.catalog
                .parse_filter(&entry)
                .map_err(|e| ApiError::invalid_field("events", e.to_string()))?;
            if !checked.contains(&entry) {
                checked.push(entry);
            }
        }
        Ok(checked)
    }
}
