//! The API's documented shapes: response bodies, the error body, the errors every route may
//! answer, and the OpenAPI document's frame (title, security scheme, tags). The paths come
//! from the handlers' `#[utoipa::path]` attributes, collected as the router is built, so the
//! document cannot drift from what is served.

use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::{
    IntoResponses, Modify, OpenApi, ToSchema,
    openapi::{
        ObjectBuilder, RefOr, Schema, Type,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
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

/// One attempt as users see it in the log: time, event type, status, retries, bodies.
#[derive(Serialize, ToSchema)]
pub struct Attempt {
    /// Also the paging cursor: pass it as `before` for older attempts.
    pub id: i64,
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: String,
    pub event_type: String,
    /// From 1.
    pub attempt_number: u32,
    /// Attempts before this one: the log's "number of retries".
    pub retries: u32,
    /// `automatic` (the event or a retry tier) or `manual`.
    pub trigger: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub attempted_at: OffsetDateTime,
    pub duration_ms: u64,
    pub response_status: Option<u16>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    /// `[name, value]` pairs, in the order sent.
    #[schema(value_type = Vec<Vec<String>>)]
    pub request_headers: serde_json::Value,
    /// In listings, the first 4 KiB (`BODY_PREVIEW`; see `body_preview`).
    pub request_body: String,
    /// Bytes of the whole request body.
    pub request_body_size: u64,
    /// `[name, value]` pairs, in the order received.
    #[schema(value_type = Option<Vec<Vec<String>>>)]
    pub response_headers: Option<serde_json::Value>,
    /// In listings, the first 4 KiB of what was kept.
    pub response_body: Option<String>,
    /// Bytes of the response body kept (at most `delivery.max_response_body`).
    pub response_body_size: Option<u64>,
    /// The endpoint sent more than was kept, or the body was cut short by the deadline.
    pub response_body_truncated: bool,
    /// A body here is a preview, shorter than its size: ask for the one attempt to see it all.
    pub body_preview: bool,
    /// The delivery's status now.
    #[schema(value_type = DeliveryStatusName)]
    pub delivery_status: &'static str,
}

impl From<AttemptView> for Attempt {
    fn from(row: AttemptView) -> Self {
        Self {
            id: row.id,
            delivery_id: row.delivery_id.0,
            webhook_id: row.webhook_id.0,
            event_id: row.event_id.as_str().to_owned(),
            event_type: row.event_type,
            attempt_number: row.attempt_number,
            retries: row.attempt_number.saturating_sub(1),
            trigger: row.trigger.as_str(),
            attempted_at: row.attempted_at,
            duration_ms: u64::try_from(row.duration.as_millis()).unwrap_or(u64::MAX),
            response_status: row.response_status,
            error_kind: row.error_kind,
            error_message: row.error_message,
            request_headers: row.request_headers,
            request_body: row.request_body,
            request_body_size: row.request_body_size,
            response_headers: row.response_headers,
            response_body: row.response_body,
            response_body_size: row.response_body_size,
            response_body_truncated: row.response_body_truncated,
            body_preview: row.body_preview,
            delivery_status: row.delivery_status.as_str(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub webhook_id: Uuid,
    pub company_id: String,
    #[schema(value_type = DeliveryStatusName)]
    pub status: &'static str,
    pub attempt_count: u32,
    /// The last attempt's HTTP status; null when it got no response (see `last_error`).
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<DeliveryView> for Delivery {
    fn from(row: DeliveryView) -> Self {
        Self {
            id: row.id.0,
            event_id: row.event_id.as_str().to_owned(),
            event_type: row.event_type,
            webhook_id: row.webhook_id.0,
            company_id: row.company_id.as_str().to_owned(),
            status: row.status.as_str(),
            attempt_count: row.attempt_count,
            last_status: row.last_status,
            last_error: row.last_error,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A company token as listed: never the token itself.
#[derive(Serialize, ToSchema)]
pub struct Token {
    pub id: Uuid,
    pub company_id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

impl From<ApiToken> for Token {
    fn from(row: ApiToken) -> Self {
        Self {
            id: row.id.0,
            company_id: row.company_id.as_str().to_owned(),
            name: row.name,
            created_at: row.created_at,
            expires_at: row.expires_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AttemptPage {
    pub data: Vec<Attempt>,
    /// Pass as `before` for the next page; null on the last one.
    pub next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<Delivery>,
    /// Pass as `before` for the next page; null on the last one.
    pub next_before: Option<Uuid>,
}

/// One delivery with all its attempts (bodies as previews).
#[derive(Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
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
    pub listed: Token,
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
pub struct EndpointHealth {
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success_at: Option<OffsetDateTime>,
    /// Failed deliveries since the last success, or since the webhook was enabled again: what
    /// auto-disable counts.
    pub failing_streak: u64,
    pub circuit: Circuit,
}

/// The endpoint's circuit breaker: `open` after a run of failed attempts, while its
/// deliveries wait untried and one probe per interval tries it; `closed` again once an
/// attempt is delivered.
#[derive(Serialize, ToSchema)]
pub struct Circuit {
    #[schema(value_type = String, pattern = "^(open|closed)$", example = "closed")]
    pub state: &'static str,
    /// When it opened, while it is open.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub opened_at: Option<OffsetDateTime>,
}

impl Circuit {
    pub fn of(opened_at: Option<OffsetDateTime>) -> Self {
        Self {
            state: if opened_at.is_some() {
                "open"
            } else {
                "closed"
            },
            opened_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// What keeps the worker from being ready: `consumers`, `database`, `broker`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<&'static str>,
}

/// The document's frame; the router adds the paths.
/// A schema for a string member or parameter whose values are the `as_str` of every value of
/// a domain enum: the document lists exactly what the code accepts and writes.
macro_rules! names_of {
    ($(#[doc = $doc:literal])* $name:ident: $domain:ty) => {
        $(#[doc = $doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(concat!($($doc),*).trim()))
                    .enum_values(Some(<$domain>::ALL.map(<$domain>::as_str)))
                    .into()
            }
        }

        impl ToSchema for $name {}
    };
}

names_of!(
    /// How a webhook's requests are signed.
    Signature: crate::domain::SignatureScheme
);
names_of!(
    /// Why a webhook is disabled: `gone` (its endpoint answered 410), `failing_too_long`, or
    /// `manual`.
    DisabledReasonName: crate::domain::DisabledReason
);
names_of!(
    /// A delivery's status.
    DeliveryStatusName: crate::domain::DeliveryStatus
);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tesoro-webhooks admin API",
        description = "Webhooks, their deliveries and attempts, recovery, and company tokens. \
                       /v1 needs `Authorization: Bearer <token>`: the admin token, or a \
                       company token that acts inside its company only."
    ),
    modifiers(&BearerAuth),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        Signature,
        super::webhooks::EventFilterName,
        super::params::Name,
        super::params::UrlText,
        super::params::RateLimit,
        super::params::PageLimit,
        DisabledReasonName,
        DeliveryStatusName
    )),
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

/// A response whose body names a resource another operation takes: an OpenAPI link, so a
/// client (or a stateful API fuzzer) can follow from a created webhook to what acts on it.
struct FollowUp {
    from: &'static str,
    status: &'static str,
    to: &'static [&'static str],
    parameters: &'static [(&'static str, &'static str)],
}

const FOLLOW_UPS: &[FollowUp] = &[
    FollowUp {
        from: "createWebhook",
        status: "201",
        to: &[
            "getWebhook",
            "updateWebhook",
            "deleteWebhook",
            "rotateWebhookSecret",
            "getWebhookPublicKey",
            "getWebhookHealth",
            "listWebhookAttempts",
            "recoverWebhook",
        ],
        parameters: &[("id", "$response.body#/id")],
    },
    FollowUp {
        from: "listDeliveries",
        status: "200",
        to: &["getDelivery", "retryDelivery"],
        parameters: &[("id", "$response.body#/data/0/id")],
    },
    FollowUp {
        from: "getDelivery",
        status: "200",
        to: &["getAttempt"],
        parameters: &[
            ("id", "$response.body#/id"),
            ("number", "$response.body#/attempts/0/number"),
        ],
    },
    FollowUp {
        from: "issueToken",
        status: "201",
        to: &["revokeToken"],
        parameters: &[
            ("company_id", "$request.path.company_id"),
            ("token_id", "$response.body#/id"),
        ],
    },
];

/// Adds [`FOLLOW_UPS`] to the document's responses. It writes the JSON itself: utoipa 5.5's
/// `Link` serializes its fields in snake_case (`operation_id`), which OpenAPI does not know.
pub fn add_links(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let operations = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for follow_up in FOLLOW_UPS.iter().filter(|f| f.from == id) {
            let Some(response) = operation
                .pointer_mut(&format!("/responses/{}", follow_up.status))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let parameters: serde_json::Map<String, Value> = follow_up
                .parameters
                .iter()
                .map(|(name, value)| ((*name).to_owned(), Value::from(*value)))
                .collect();
            let links = follow_up.to.iter().map(|to| {
                let link = json!({ "operationId": to, "parameters": parameters });
                ((*to).to_owned(), link)
            });
            response.insert("links".to_owned(), Value::Object(links.collect()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    fn methods(item: &Value) -> impl Iterator<Item = &Value> {
        ["get", "put", "post", "patch", "delete"]
            .into_iter()
            .filter_map(|method| item.get(method))
    }

    /// operationId → the names of its parameters.
    fn operations(document: &Value) -> BTreeMap<String, BTreeSet<String>> {
        let mut operations = BTreeMap::new();
        for item in document["paths"].as_object().expect("paths").values() {
            for operation in methods(item) {
                let id = operation["operationId"].as_str().expect("operationId");
                let parameters = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["name"].as_str().expect("name").to_owned())
                    .collect();
                let earlier = operations.insert(id.to_owned(), parameters);
                assert!(earlier.is_none(), "operationId {id} is used twice");
            }
        }
        operations
    }

    #[test]
    fn operation_ids_are_unique_and_every_link_fits_its_target() {
        let document = crate::api::openapi();
        let operations = operations(&document);
        let mut links = 0;
        for item in document["paths"].as_object().expect("paths").values() {
            for operation in methods(item) {
                let responses = operation["responses"].as_object().expect("responses");
                for response in responses.values() {
                    let Some(response_links) = response["links"].as_object() else {
                        continue;
                    };
                    for link in response_links.values() {
                        let target = link["operationId"].as_str().expect("operationId");
                        let parameters = operations
                            .get(target)
                            .unwrap_or_else(|| panic!("link to unknown operation {target}"));
                        for name in link["parameters"].as_object().expect("parameters").keys() {
                            assert!(parameters.contains(name), "{target} takes no {name}");
                        }
                        links += 1;
                    }
                }
            }
        }
        let expected: usize = super::FOLLOW_UPS.iter().map(|f| f.to.len()).sum();
        assert_eq!(links, expected, "every follow-up became a link");
    }

    #[test]
    fn string_enums_list_what_the_domain_accepts() {
        use crate::domain::{DeliveryStatus, DisabledReason, SignatureScheme};
        let document = crate::api::openapi();
        let values = |name: &str| -> Vec<String> {
            document["components"]["schemas"][name]["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} has no enum"))
                .iter()
                .map(|v| v.as_str().expect("string").to_owned())
                .collect()
        };
        let signatures = values("Signature");
        assert!(
            signatures
                .iter()
                .all(|v| SignatureScheme::parse(v).is_some())
        );
        assert_eq!(signatures.len(), SignatureScheme::ALL.len());
        let reasons = values("DisabledReasonName");
        assert!(reasons.iter().all(|v| DisabledReason::parse(v).is_some()));
        assert_eq!(reasons.len(), DisabledReason::ALL.len());
        let statuses = values("DeliveryStatusName");
        assert!(statuses.iter().all(|v| DeliveryStatus::parse(v).is_some()));
        assert_eq!(statuses.len(), DeliveryStatus::ALL.len());
        assert_eq!(
            document["components"]["schemas"]["DeliveryStatusName"]["description"],
            "A delivery's status."
        );
    }
}
