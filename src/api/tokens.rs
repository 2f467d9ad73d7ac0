//! /v1/companies/{company_id}/tokens: company-scoped tokens, issued, listed and revoked by the
//! admin only. A token is shown once, when issued; only its hash is kept.

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{
    ApiState,
    auth::Principal,
    deliveries::parse_time,
    error::ApiError,
    extract::{ApiPath, OptionalJson},
};
use crate::domain::{CompanyId, CompanyToken, TokenId};

const MAX_NAME_LEN: usize = 200;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    /// What the token is for ("dashboard", "zapier"); shown in the listing.
    name: Option<String>,
    /// RFC 3339; the token stops working then. None: it works until revoked.
    expires_at: Option<String>,
}

fn company(id: String) -> Result<CompanyId, ApiError> {
    CompanyId::parse(id).map_err(|e| ApiError::invalid_field("company_id", e.to_string()))
}

pub async fn issue(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(company_id): ApiPath<String>,
    OptionalJson(body): OptionalJson<IssueBody>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require_admin()?;
    let company = company(company_id)?;
    let name = body.name.unwrap_or_else(|| "api".to_owned());
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME_LEN
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            "name",
            format!("name must be 1 to {MAX_NAME_LEN} characters, none of them control characters"),
        ));
    }
    let expires_at = parse_time("expires_at", body.expires_at.as_deref())?;
    if expires_at.is_some_and(|at| at <= OffsetDateTime::now_utc()) {
        return Err(ApiError::invalid_field(
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    let token = CompanyToken::generate();
    let issued = state
        .storage
        .create_token(&company, &name, &token.hash(), expires_at)
        .await?;
    let mut body = serde_json::to_value(&issued).unwrap_or_default();
    body["token"] = json!(token.expose());
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(company_id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require_admin()?;
    let tokens = state.storage.company_tokens(&company(company_id)?).await?;
    Ok(Json(json!({ "data": tokens })))
}

pub async fn revoke(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath((company_id, token_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let company = company(company_id)?;
    let id = TokenId::parse(&token_id).map_err(|_| ApiError::not_found("token"))?;
    if state.storage.delete_token(&company, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token"))
    }
}
