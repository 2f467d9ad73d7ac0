//! /v1/companies/{company_id}/tokens: company-scoped tokens, issued, listed and revoked by the
//! admin only. A token is shown once, when issued; only its hash is kept.

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState,
    auth::Principal,
    error::ApiError,
    extract::{ApiPath, OptionalJson},
    params::{Name, Time},
    schema::{CommonErrors, IssuedToken, Page, Token},
};
use crate::domain::{CompanyId, CompanyToken, TokenId};

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    /// What the token is for ("dashboard", "zapier"); shown in the listing.
    #[schema(value_type = Option<Name>)]
    name: Option<Name>,
    /// RFC 3339, in the future; the token stops working then. None: until revoked.
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Time>,
}

/// The `{company_id}` of a token route.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "describes the path parameter in the OpenAPI document"
)]
pub struct CompanyPath {
    #[param(pattern = "^[!-~]{1,255}$")]
    company_id: String,
}

/// The `{company_id}` and `{token_id}` of one token.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "describes the path parameters in the OpenAPI document"
)]
pub struct TokenPath {
    #[param(pattern = "^[!-~]{1,255}$")]
    company_id: String,
    #[param(value_type = String, format = Uuid)]
    token_id: String,
}

fn company(id: String) -> Result<CompanyId, ApiError> {
    CompanyId::parse(id).map_err(|e| ApiError::invalid_field("company_id", e.to_string()))
}

/// Issues a token for the company; it is shown in this response only.
#[utoipa::path(post, operation_id = "issueToken",
    path = "/companies/{company_id}/tokens", tag = "tokens",
    security(("bearer" = [])), params(CompanyPath), request_body(content = Option<IssueBody>),
    responses((status = 201, body = IssuedToken), CommonErrors))]
pub async fn issue(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(company_id): ApiPath<String>,
    OptionalJson(body): OptionalJson<IssueBody>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require_admin()?;
    let company = company(company_id)?;
    let name = body.name.map_or_else(|| "api".to_owned(), Name::into_inner);
    let expires_at = body.expires_at.map(|at| at.0);
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
    let issued = IssuedToken {
        listed: issued.into(),
        token: token.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(issued)))
}

/// The company's tokens (never the tokens themselves).
#[utoipa::path(get, operation_id = "listTokens",
    path = "/companies/{company_id}/tokens", tag = "tokens",
    security(("bearer" = [])), params(CompanyPath),
    responses((status = 200, body = Page<Token>), CommonErrors))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    ApiPath(company_id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require_admin()?;
    let tokens = state.storage.company_tokens(&company(company_id)?).await?;
    let data = tokens.into_iter().map(Token::from).collect();
    Ok(Json(Page { data }))
}

/// Revokes a token.
#[utoipa::path(delete, operation_id = "revokeToken",
    path = "/companies/{company_id}/tokens/{token_id}", tag = "tokens",
    security(("bearer" = [])), params(TokenPath),
    responses((status = 204, description = "Revoked"), CommonErrors))]
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
