//! Who is calling `/v1`: the admin (the `api.admin_token`, which may do anything) or a company
//! (a token issued for it, which acts only inside that company). The middleware resolves the
//! bearer token once per request; handlers take the [`Principal`] and ask it what they may
//! show or change.

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{header::AUTHORIZATION, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq;

use super::{
    ApiState,
    error::ApiError,
    schema::{CommonErrors, Session},
};
use crate::domain::{CompanyId, TOKEN_PREFIX, token_hash};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Company(CompanyId),
}

impl Principal {
    /// The company a request acts for, given the one it names (`company_id` in a body or a
    /// query): the admin acts for the one named, a company token for its own, and naming
    /// another company is forbidden.
    pub fn acting_for(&self, named: Option<CompanyId>) -> Result<Option<CompanyId>, ApiError> {
        match (self, named) {
            (Principal::Admin, named) => Ok(named),
            (Principal::Company(own), None) => Ok(Some(own.clone())),
            (Principal::Company(own), Some(named)) if named == *own => Ok(Some(named)),
            (Principal::Company(own), Some(_)) => Err(ApiError::forbidden(format!(
                "this token acts for company {own} only"
            ))),
        }
    }

    /// Whether it may see what belongs to `company`. What it may not see is reported as not
    /// found, so another tenant's ids reveal nothing.
    pub fn may_see(&self, company: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Company(own) => own.as_str() == company,
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Company(_) => Err(ApiError::forbidden("only the admin token may do this")),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

/// Who the token belongs to: the admin, or a company.
#[utoipa::path(get, operation_id = "getSession",
    path = "/session", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = Session), CommonErrors))]
pub async fn session(principal: Principal) -> axum::Json<Session> {
    axum::Json(match principal {
        Principal::Admin => Session {
            admin: true,
            company_id: None,
        },
        Principal::Company(company) => Session {
            admin: false,
            company_id: Some(company.to_string()),
        },
    })
}

/// Resolves the bearer token into the request's [`Principal`], or answers 401.
pub async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let principal = match identify(&state, presented).await {
        Ok(Some(principal)) => principal,
        Ok(None) => return ApiError::unauthorized().into_response(),
        Err(error) => return error.into_response(),
    };
    request.extensions_mut().insert(principal);
    next.run(request).await
}

async fn identify(state: &ApiState, presented: &str) -> Result<Option<Principal>, ApiError> {
    // Constant-time, so response timing does not leak how much of a guess was right.
    if bool::from(presented.as_bytes().ct_eq(state.admin_token.as_bytes())) {
        return Ok(Some(Principal::Admin));
    }
    // A company token is looked up by its hash: a guess learns nothing from timing either.
    if !presented.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let company = state.storage.token_company(&token_hash(presented)).await?;
    Ok(company.map(Principal::Company))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn company(id: &str) -> CompanyId {
        CompanyId::parse(id).expect("company id")
    }

    #[test]
    fn a_company_token_acts_for_its_company_only() {
        let own = Principal::Company(company("cmp_a"));
        assert_eq!(own.acting_for(None).ok(), Some(Some(company("cmp_a"))));
        assert_eq!(
            own.acting_for(Some(company("cmp_a"))).ok(),
            Some(Some(company("cmp_a")))
        );
        assert!(own.acting_for(Some(company("cmp_b"))).is_err());
        assert!(own.may_see("cmp_a") && !own.may_see("cmp_b"));
        assert!(own.require_admin().is_err());
        let admin = Principal::Admin;
        assert_eq!(admin.acting_for(None).ok(), Some(None));
        assert_eq!(
            admin.acting_for(Some(company("cmp_b"))).ok(),
            Some(Some(company("cmp_b")))
        );
        assert!(admin.may_see("cmp_b") && admin.require_admin().is_ok());
    }
}
