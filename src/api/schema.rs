//! The API's documented shapes: response bodies, the error body, the errors every route may
//! answer, and the OpenAPI document's frame (title, security scheme, tags). The paths come
//! from the handlers' `#[utoipa::path]` attributes, collected as the router is built, so the
//! document cannot drift from what is served.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::{
    IntoResponses, Modify, OpenApi, ToSchema,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use uuid::Uuid;

use crate::storage::{ApiToken, AttemptView, DeliveryView};

/// `{"error": {...}}`, the body of every 4xx and 5xx.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `bad_request`, `invalid_json`, `missing_parameter`, `unauthorized`,
    /// `forbidden`, `not_found`, `method_not_allowed`, `too_large`, `invalid_field`,
    /// `unavailable`.
    pub code: String,
    pub message: String,
    /// The field or parameter at fault, when one is.
    pub field: Option<String>,
}

/// The errors any `/v1` route may answer.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "describes responses in the OpenAPI document")]
pub enum CommonErrors {
    /// Malformed JSON, query or path.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// No valid bearer token.
    #[response(status = 401)]
    Unauthorized(#[to_schema] ErrorBody),
    /// A company token naming another company, or an admin-only route.
    #[response(status = 403)]
    Forbidden(#[to_schema] ErrorBody),
    /// Unknown id (or another company's), or unknown route.
    #[response(status = 404)]
    NotFound(#[to_schema] ErrorBody),
    /// A method the route does not take.
    #[response(status = 405)]
    MethodNotAllowed(#[to_schema] ErrorBody),
    /// A body over 2 MB.
    #[response(status = 413)]
    TooLarge(#[to_schema] ErrorBody),
    /// A field is invalid; `field` names it.
    #[response(status = 422)]
    Invalid(#[to_schema] ErrorBody),
    /// Storage or the broker is unavailable: try again.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
}

#[derive(Serialize, ToSchema)]
pub struct EventTypes {
    pub event_types: Vec<String>,
    pub categories: Vec<Category>,
}

#[derive(Serialize, ToSchema)]
pub struct Category {
    pub name: String,
    pub events: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub data: Vec<T>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptPage {
    pub data: Vec<AttemptView>,
    /// Pass as `before` for the next page; null on the last one.
    pub next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<DeliveryView>,
    /// Pass as `before` for the next page; null on the last one.
    pub next_before: Option<Uuid>,
}

/// One delivery with all its attempts (bodies as previews).
#[derive(Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    pub attempts: Vec<AttemptView>,
}

#[derive(Serialize, ToSchema)]
pub struct Retried {
    pub delivery_id: Uuid,
    /// False when the delivery was already waiting for an attempt: nothing was added.
    pub enqueued: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Recovered {
    /// Failed deliveries re-enqueued.
    pub enqueued: u64,
}

/// A token as issued: the token itself appears here only.
#[derive(Serialize, ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub listed: ApiToken,
    /// `twk_...`: give it as `Authorization: Bearer <token>`.
    pub token: String,
}

#[derive(Serialize, ToSchema)]
pub struct PublicKeys {
    /// `whpk_` + base64 of the Ed25519 public key.
    pub public_key: String,
    /// The key a rotation replaced, while it still signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_public_key: Option<String>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub secret_rotation_ends_at: Option<OffsetDateTime>,
}

/// Who the token belongs to.
#[derive(Serialize, ToSchema)]
pub struct Session {
    /// The admin token: every company.
    pub admin: bool,
    /// A company token's company; null for the admin.
    pub company_id: Option<String>,
}

/// How a webhook is doing, from its deliveries.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success_at: Option<OffsetDateTime>,
    /// Failed deliveries since the last success (or ever, without one).
    pub failing_streak: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// What keeps the worker from being ready: `consumers`, `database`, `broker`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<&'static str>,
}

/// The document's frame; the router adds the paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tesoro-webhooks admin API",
        description = "Webhooks, their deliveries and attempts, recovery, and company tokens. \
                       /v1 needs `Authorization: Bearer <token>`: the admin token, or a \
                       company token that acts inside its company only."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "webhooks", description = "Subscriptions and their signing keys"),
        (name = "deliveries", description = "The delivery log, retries and recovery"),
        (name = "tokens", description = "Company-scoped tokens (admin only)"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
