//! Extractors whose rejections are our JSON errors instead of axum's plain-text ones.

use std::borrow::Cow;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body: malformed JSON is a 400, well-formed JSON of the wrong shape a 422. The
/// content type is not required (curl users forget it).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(request, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    /// An empty body or `null` is the default.
    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(request, state).await?;
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() || trimmed == b"null" {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

async fn body_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(e.body_text())
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
}

/// Every body the API takes is an object: serde would also fill a struct from an array, member
/// by member in order, which no client means.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.trim_ascii().first().is_some_and(|b| *b != b'{') {
        let valid = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        return Err(if valid {
            ApiError::invalid_field("body", "the body must be a JSON object")
        } else {
            ApiError::invalid_json("the body is not JSON")
        });
    }
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let field = top_level_field(e.path());
        json_error(field, e.into_inner())
    })?;
    json.end().map_err(|e| json_error("body".into(), e))?;
    Ok(value)
}

/// The body's member where deserializing failed (`events` for `"events": "deal.won"`, the
/// name itself for an unknown member), or `body` when it failed at the top.
fn top_level_field(path: &serde_path_to_error::Path) -> Cow<'static, str> {
    match path.iter().next() {
        Some(serde_path_to_error::Segment::Map { key }) => key.clone().into(),
        _ => "body".into(),
    }
}

/// Malformed JSON is a 400; well-formed JSON of the wrong shape a 422 naming `field`.
fn json_error(field: Cow<'static, str>, error: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => {
            // The message without serde_json's " at line 1 column 20": the field is named.
            let message = error.to_string();
            let position = format!(" at line {} column {}", error.line(), error.column());
            let message = message.strip_suffix(&position).unwrap_or(&message);
            ApiError::invalid_field(field, message.to_owned())
        }
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::invalid_json(error.to_string())
        }
    }
}

/// Query parameters, each parsed into its type: a value that does not parse is a 422 naming
/// its parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs = form_urlencoded_pairs(query);
        serde_path_to_error::deserialize(pairs)
            .map(ApiQuery)
            .map_err(|e| {
                let field = top_level_field(e.path());
                ApiError::invalid_field(field, e.into_inner().to_string())
            })
    }
}

fn form_urlencoded_pairs(query: &str) -> serde_urlencoded::Deserializer<'_> {
    serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()))
}

/// Path parameters; one that cannot be decoded (invalid UTF-8, say) is a 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// `Some(value)` when the key is present (even as `null`), `None` when absent: PATCH tells
/// "remove the secret" (`null`) from "leave it" (absent).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, response::IntoResponse};

    use super::*;

    /// In process: over HTTP the server may reset the connection with the rest of the body
    /// unread, before the client reads the 413.
    #[tokio::test]
    async fn a_body_over_the_limit_is_a_json_413() {
        let request = Request::builder()
            .method("POST")
            .body(Body::from(vec![b' '; 3 << 20]))
            .expect("request");
        let Err(error) = ApiJson::<serde_json::Value>::from_request(request, &()).await else {
            panic!("a 3 MiB body passed the 2 MB limit");
        };
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["code"], "too_large");
    }
}
