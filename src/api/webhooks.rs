//! /v1/webhooks and /v1/event-types.

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{ObjectBuilder, RefOr, Schema, Type},
};

use super::{
    ApiState,
    auth::Principal,
    error::ApiError,
    extract::{ApiJson, ApiPath, ApiQuery, OptionalJson, present},
    params::{Name, RateLimit, UrlText},
    schema::{
        Category, Circuit, CommonErrors, DisabledReasonName, EndpointHealth, EventTypes, Page,
        PublicKeys, Signature,
    },
};
use crate::{
    domain::{
        Catalog, CompanyId, CustomHeaders, EndpointUrl, EventFilter, SignatureScheme, SigningKey,
        SigningSecret, WebhookId,
    },
    storage::{NewWebhook, Webhook, WebhookChanges},
};

/// How long a rotated-out key keeps signing unless the request says otherwise.
const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The longest grace a rotation may give: a key being retired should not sign for weeks.
const MAX_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// An entry of a webhook's `events`: an event type of the catalog, or a whole category
/// (`deal.*`, which also covers types the catalog gains later).
pub struct EventFilterName;

impl PartialSchema for EventFilterName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Catalog::builtin().filters()))
            .into()
    }
}

impl ToSchema for EventFilterName {}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Required with the admin token; a company token's own company by default.
    #[schema(value_type = Option<String>, pattern = "^[!-~]{1,255}$")]
    company_id: Option<CompanyId>,
    /// Not all blank, no control characters.
    #[schema(value_type = Name, required = true)]
    name: Option<Name>,
    /// An absolute http(s) URL; its host must reach an address the SSRF guard permits.
    #[schema(value_type = UrlText, required = true)]
    url: Option<String>,
    /// Event types (`deal.won`) or whole categories (`deal.*`), at least one.
    #[schema(value_type = Vec<EventFilterName>, required = true, min_items = 1)]
    events: Option<Vec<String>>,
    /// `whsec_` + base64 of 24 to 64 bytes.
    #[schema(pattern = "^whsec_")]
    secret: Option<String>,
    /// Generate a secret (shown in the response only).
    #[serde(default)]
    generate_secret: bool,
    /// `hmac` (the default) or `ed25519` (a key pair is generated; give no secret).
    #[schema(value_type = Option<Signature>)]
    signature: Option<String>,
    /// Sent with every attempt: up to 20, names not reserved (`content-type`, `host`,
    /// `webhook-*`, `x-tesoro-*`, hop-by-hop ones), values 1 to 1024 visible ASCII
    /// characters, 8 KiB in all.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    headers: Option<BTreeMap<String, String>>,
    /// Attempts per second at most, across all workers; none by default.
    #[schema(value_type = Option<RateLimit>)]
    rate_limit: Option<RateLimit>,
    /// True by default.
    enabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[schema(value_type = Option<Name>)]
    name: Option<Name>,
    #[schema(value_type = Option<UrlText>)]
    url: Option<String>,
    #[schema(value_type = Option<Vec<EventFilterName>>, min_items = 1)]
    events: Option<Vec<String>>,
    /// A new secret, or null to remove the key (requests go unsigned).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, pattern = "^whsec_")]
    secret: Option<Option<String>>,
    #[serde(default)]
    generate_secret: bool,
    #[schema(value_type = Option<Signature>)]
    signature: Option<String>,
    /// Replaces the headers; `null` or `{}` removes them. A sensitive header's value given as
    /// `***` (as responses show it) keeps the stored one.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<BTreeMap<String, String>>, nullable)]
    headers: Option<Option<BTreeMap<String, String>>>,
    /// A new limit; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RateLimit>, nullable)]
    rate_limit: Option<Option<RateLimit>>,
    enabled: Option<bool>,
}

/// `POST /v1/webhooks/{id}/secret/rotate`; every member optional.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the replaced key keeps signing beside the new one: `0s` to `7d`, `24h` by
    /// default.
    #[schema(example = "24h")]
    grace: Option<String>,
    /// The new key's scheme; the current one's by default (a webhook without a key gets an
    /// HMAC secret).
    #[schema(value_type = Option<Signature>)]
    signature: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Required with the admin token; a company token's own company by default.
    #[param(value_type = Option<String>, pattern = "^[!-~]{1,255}$")]
    company_id: Option<CompanyId>,
}

/// The `{id}` of a webhook route.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "describes the path parameter in the OpenAPI document"
)]
pub struct WebhookPath {
    /// The webhook's id.
    #[param(value_type = String, format = Uuid)]
    id: String,
}

/// A webhook as the API shows it. The secret is shown only in the response that set it.
#[derive(Serialize, ToSchema)]
pub struct WebhookBody {
    #[schema(value_type = String, format = Uuid)]
    id: WebhookId,
    #[schema(value_type = String)]
    company_id: CompanyId,
    name: String,
    url: String,
    events: Vec<String>,
    enabled: bool,
    /// Why it is disabled; null while enabled.
    #[schema(value_type = Option<DisabledReasonName>)]
    disabled_reason: Option<&'static str>,
    /// Since when it is disabled; null while enabled.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    disabled_at: Option<OffsetDateTime>,
    /// `hmac`, `ed25519`, or null when requests go unsigned.
    #[schema(value_type = Option<Signature>)]
    signature: Option<&'static str>,
    /// Whether it signs with a shared (HMAC) secret.
    has_secret: bool,
    /// The HMAC secret, only in the response that set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// Sent with every attempt (`{}` when none). Values of sensitive headers (names with
    /// auth, token, secret, key or password, and cookie) show as `***`.
    headers: BTreeMap<String, String>,
    /// Attempts per second at most, across all workers; null when unlimited.
    rate_limit: Option<u32>,
    /// The Ed25519 public key receivers verify with.
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    /// While a rotation's grace lasts, the replaced key signs too, until this time.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    secret_rotation_ends_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl WebhookBody {
    fn new(webhook: Webhook, reveal_secret: bool) -> Self {
        let key = webhook.signing.as_ref().map(|s| &s.key);
        Self {
            id: webhook.id,
            company_id: webhook.company_id,
            name: webhook.name,
            url: webhook.url.to_string(),
            events: webhook.events.iter().map(ToString::to_string).collect(),
            enabled: webhook.enabled,
            disabled_reason: webhook.disabled.map(|(reason, _)| reason.as_str()),
            disabled_at: webhook.disabled.map(|(_, at)| at),
            signature: key.map(|k| k.scheme().as_str()),
            has_secret: matches!(key, Some(SigningKey::Hmac(_))),
            secret: match key {
                Some(SigningKey::Hmac(secret)) if reveal_secret => Some(secret.expose().to_owned()),
                _ => None,
            },
            headers: webhook.headers.shown(),
            rate_limit: webhook.rate_limit,
            public_key: match key {
                Some(SigningKey::Ed25519(key)) => Some(key.public_key()),
                _ => None,
            },
            secret_rotation_ends_at: webhook
                .signing
                .as_ref()
                .and_then(|s| s.previous.as_ref())
                .map(|p| p.until),
            created_at: webhook.created_at,
            updated_at: webhook.updated_at,
        }
    }
}

/// The event catalog: every type a webhook can subscribe to, by category.
#[utoipa::path(get, operation_id = "listEventTypes",
    path = "/event-types", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = EventTypes), CommonErrors))]
pub async fn event_types(State(state): State<Arc<ApiState>>) -> Json<EventTypes> {
    let categories = state
        .catalog
        .categories()
        .iter()
        .map(|c| Category {
            name: c.name.clone(),
            events: c.events.iter().map(|e| format!("{}.{e}", c.name)).collect(),
        })
        .collect();
    let event_types = state.catalog.event_types().collect();
    Json(EventTypes {
        event_types,
        categories,
    })
}

/// Creates a webhook; the secret appears in this response only.
#[utoipa::path(post, operation_id = "createWebhook",
    path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body = CreateWebhook,
    responses((status = 201, body = WebhookBody), CommonErrors))]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    let company_id = required(principal.acting_for(body.company_id)?, "company_id")?;
    let new = NewWebhook {
        company_id,
        name: required(body.name, "name")?.into_inner(),
        url: state.check_url(&required(body.url, "url")?).await?,
        events: state.check_events(required(body.events, "events")?)?,
        signing_key: choose_key(
            body.secret.map(Some),
            body.generate_secret,
            body.signature.as_deref(),
        )?
        .flatten(),
        headers: body
            .headers
            .map(|given| check_headers(&CustomHeaders::default(), given))
            .transpose()?
            .unwrap_or_default(),
        rate_limit: body.rate_limit.map(|limit| limit.0),
        enabled: body.enabled.unwrap_or(true),
    };
    let webhook = state.storage.create_webhook(new).await?;
    state
        .subscriptions
        .invalidate(Some(webhook.company_id.as_str()));
    Ok((StatusCode::CREATED, Json(WebhookBody::new(webhook, true))))
}

/// A company's webhooks, oldest first.
#[utoipa::path(get, operation_id = "listWebhooks",
    path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, body = Page<WebhookBody>), CommonErrors))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let company = principal
        .acting_for(query.company_id)?
        .ok_or(ApiError::missing_parameter("company_id"))?;
    let webhooks = state.storage.company_webhooks(&company).await?;
    let data = webhooks
        .into_iter()
        .map(|w| WebhookBody::new(w, false))
        .collect();
    Ok(Json(Page { data }))
}

/// One webhook (never its secret).
#[utoipa::path(get, operation_id = "getWebhook",
    path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(WebhookPath),
    responses((status = 200, body = WebhookBody), CommonErrors))]
pub async fn get(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let webhook = owned_webhook(&state, &principal, &id).await?;
    Ok(Json(WebhookBody::new(webhook, false)))
}

/// The webhook `id`, if it exists and `principal` may see it; else not found.
pub(super) async fn owned_webhook(
    state: &ApiState,
    principal: &Principal,
    id: &str,
) -> Result<Webhook, ApiError> {
    state
        .storage
        .webhook(webhook_id(id)?)
        .await?
        .filter(|webhook| principal.may_see(webhook.company_id.as_str()))
        .ok_or_else(|| ApiError::not_found("webhook"))
}

/// Changes a webhook; a key set here replaces the old one at once (see rotate).
#[utoipa::path(patch, operation_id = "updateWebhook",
    path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(WebhookPath), request_body = UpdateWebhook,
    responses((status = 200, body = WebhookBody), CommonErrors))]
pub async fn update(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    // A webhook's company never changes, so the check holds for the write that follows.
    let current = owned_webhook(&state, &principal, &id).await?;
    let id = current.id;
    let signing_key = choose_key(body.secret, body.generate_secret, body.signature.as_deref())?;
    let reveal = signing_key.as_ref().is_some_and(Option::is_some);
    let changes = WebhookChanges {
        name: body.name.map(Name::into_inner),
        url: match body.url {
            Some(url) => Some(state.check_url(&url).await?),
            None => None,
        },
        events: body.events.map(|e| state.check_events(e)).transpose()?,
        signing_key,
        headers: body
            .headers
            .map(|given| check_headers(&current.headers, given.unwrap_or_default()))
            .transpose()?,
        rate_limit: body.rate_limit.map(|limit| limit.map(|limit| limit.0)),
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

/// Deletes a webhook with its deliveries and attempts.
#[utoipa::path(delete, operation_id = "deleteWebhook",
    path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(WebhookPath),
    responses((status = 204, description = "Deleted"), CommonErrors))]
pub async fn delete(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = owned_webhook(&state, &principal, &id).await?.id;
    let company = state.storage.delete_webhook(id).await?;
    let company = company.ok_or_else(|| ApiError::not_found("webhook"))?;
    state.subscriptions.invalidate(Some(&company));
    Ok(StatusCode::NO_CONTENT)
}

fn webhook_id(id: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(id).map_err(|_| ApiError::not_found("webhook"))
}

/// `given` as the webhook's headers, where a hidden value keeps the one in `current`.
fn check_headers(
    current: &CustomHeaders,
    given: BTreeMap<String, String>,
) -> Result<CustomHeaders, ApiError> {
    current
        .keep_hidden(given)
        .and_then(CustomHeaders::new)
        .map_err(|e| ApiError::invalid_field("headers", e.to_string()))
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid_field(field, format!("{field} is required")))
}

/// The signing key a create or update asks for: `secret` as given (`Some(None)` removes the
/// key), a generated secret, or with `signature: "ed25519"` a generated key pair. `None`
/// leaves the key as it is.
fn choose_key(
    given: Option<Option<String>>,
    generate: bool,
    signature: Option<&str>,
) -> Result<Option<Option<SigningKey>>, ApiError> {
    let invalid = |m: String| ApiError::invalid_field("secret", m);
    match signature.map(scheme).transpose()? {
        Some(SignatureScheme::Ed25519) => {
            if generate || matches!(given, Some(Some(_))) {
                return Err(ApiError::invalid_field(
                    "signature",
                    "an ed25519 webhook's key pair is generated: give no secret",
                ));
            }
            return Ok(Some(Some(SigningKey::generate(SignatureScheme::Ed25519))));
        }
        Some(SignatureScheme::Hmac) if given.is_none() => {
            return Ok(Some(Some(SigningKey::generate(SignatureScheme::Hmac))));
        }
        Some(SignatureScheme::Hmac) | None => {}
    }
    match (given, generate) {
        (Some(Some(_)), true) => Err(invalid(
            "give a secret or set generate_secret, not both".into(),
        )),
        (_, true) => Ok(Some(Some(SigningKey::generate(SignatureScheme::Hmac)))),
        (Some(Some(text)), false) => SigningSecret::parse(&text)
            .map(|s| Some(Some(SigningKey::Hmac(s))))
            .map_err(|e| invalid(format!("secret {e}"))),
        (Some(None), false) => Ok(Some(None)),
        (None, false) => Ok(None),
    }
}

fn scheme(value: &str) -> Result<SignatureScheme, ApiError> {
    SignatureScheme::parse(value).ok_or_else(|| {
        ApiError::invalid_field("signature", "signature must be \"hmac\" or \"ed25519\"")
    })
}

/// A new signing key, shown once (the HMAC secret, or the Ed25519 public key); the replaced
/// one signs beside it until the grace ends.
#[utoipa::path(post, operation_id = "rotateWebhookSecret",
    path = "/webhooks/{id}/secret/rotate", tag = "webhooks",
    security(("bearer" = [])), params(WebhookPath), request_body(content = Option<RotateBody>),
    responses((status = 200, body = WebhookBody), CommonErrors))]
pub async fn rotate_secret(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<RotateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let current = owned_webhook(&state, &principal, &id).await?;
    let grace = match body.grace.as_deref() {
        None => DEFAULT_GRACE,
        Some(text) => humantime::parse_duration(text)
            .ok()
            .filter(|grace| *grace <= MAX_GRACE)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "grace",
                    "grace must be a duration from \"0s\" to \"7d\", like \"24h\"",
                )
            })?,
    };
    let requested = body.signature.as_deref().map(scheme).transpose()?;
    let scheme = requested
        .or_else(|| current.signing.as_ref().map(|s| s.key.scheme()))
        .unwrap_or(SignatureScheme::Hmac);
    let key = SigningKey::generate(scheme);
    let webhook = state
        .storage
        .rotate_signing_key(current.id, &key, grace)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    state
        .subscriptions
        .invalidate(Some(webhook.company_id.as_str()));
    Ok(Json(WebhookBody::new(webhook, true)))
}

/// What receivers of an Ed25519 webhook verify with; 404 for a webhook signing otherwise.
#[utoipa::path(get, operation_id = "getWebhookPublicKey",
    path = "/webhooks/{id}/public-key", tag = "webhooks",
    security(("bearer" = [])), params(WebhookPath),
    responses((status = 200, body = PublicKeys), CommonErrors))]
pub async fn public_key(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let webhook = owned_webhook(&state, &principal, &id).await?;
    let signing = webhook.signing.as_ref();
    let Some(SigningKey::Ed25519(key)) = signing.map(|s| &s.key) else {
        return Err(ApiError::not_found(
            "public key (the webhook does not sign with ed25519)",
        ));
    };
    let previous = signing
        .and_then(|s| s.previous.as_ref())
        .and_then(|p| match &p.key {
            SigningKey::Ed25519(key) => Some((key.public_key(), p.until)),
            SigningKey::Hmac(_) => None,
        });
    let (previous_public_key, secret_rotation_ends_at) = previous.unzip();
    Ok(Json(PublicKeys {
        public_key: key.public_key(),
        previous_public_key,
        secret_rotation_ends_at,
    }))
}

/// Enabled or not, its latest success, the Failed deliveries since, and its circuit.
#[utoipa::path(get, operation_id = "getWebhookHealth",
    path = "/webhooks/{id}/health", tag = "webhooks",
    security(("bearer" = [])), params(WebhookPath),
    responses((status = 200, body = EndpointHealth), CommonErrors))]
pub async fn endpoint_health(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let webhook = owned_webhook(&state, &principal, &id).await?;
    let health = state.storage.webhook_health(webhook.id).await?;
    Ok(Json(EndpointHealth {
        enabled: webhook.enabled,
        last_success_at: health.last_success_at,
        failing_streak: health.failing_streak,
        circuit: Circuit::of(health.circuit_opened_at),
    }))
}

impl ApiState {
    /// Parses `url` and checks what it reaches: an IP literal, or every address its name
    /// resolves to, must be one the SSRF guard permits.
    async fn check_url(&self, url: &str) -> Result<EndpointUrl, ApiError> {
        let url = EndpointUrl::parse(url, self.targets.policy())
            .map_err(|e| ApiError::invalid_field("url", format!("url {e}")))?;
        self.targets.check(&url).await.map_err(|e| {
            let host = url.as_url().host_str().unwrap_or_default();
            ApiError::invalid_field("url", format!("url {host} resolves to {e}"))
        })?;
        Ok(url)
    }

    /// Parses a webhook's `events`, each once, in the order given.
    fn check_events(&self, events: Vec<String>) -> Result<Vec<EventFilter>, ApiError> {
        if events.is_empty() {
            return Err(ApiError::invalid_field(
                "events",
                "select at least one event",
            ));
        }
        let mut checked = Vec::with_capacity(events.len());
        for entry in events {
            let filter = self
                .catalog
                .parse_filter(&entry)
                .map_err(|e| ApiError::invalid_field("events", e.to_string()))?;
            if !checked.contains(&filter) {
                checked.push(filter);
            }
        }
        Ok(checked)
    }
}
