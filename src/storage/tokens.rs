//! Company-scoped API tokens, kept as hashes.

use time::OffsetDateTime;
use tokio_postgres::Row;

use super::{Storage, StorageError};
use crate::domain::{CompanyId, TokenId};

/// A token as listed: never the token itself.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: TokenId,
    pub company_id: CompanyId,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, company_id, name, created_at, expires_at";

fn from_row(row: &Row) -> Result<ApiToken, StorageError> {
    Ok(ApiToken {
        id: TokenId(row.try_get("id")?),
        company_id: CompanyId::from_stored(row.try_get("company_id")?),
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

impl Storage {
    pub async fn create_token(
        &self,
        company: &CompanyId,
        name: &str,
        hash: &[u8; 32],
        expires_at: Option<OffsetDateTime>,
    ) -> Result<ApiToken, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO api_tokens (id, company_id, name, token_hash, expires_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
                ),
                &[
                    &TokenId::new().0,
                    &company.as_str(),
                    &name,
                    &hash.as_slice(),
                    &expires_at,
                ],
            )
            .await?;
        from_row(&row)
    }

    /// A company's tokens, oldest first (expired ones too, until they are revoked).
    pub async fn company_tokens(&self, company: &CompanyId) -> Result<Vec<ApiToken>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE company_id = $1 ORDER BY id"),
                &[&company.as_str()],
            )
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Revokes a company's token; false when it has no such token.
    pub async fn delete_token(
        &self,
        company: &CompanyId,
        id: TokenId,
    ) -> Result<bool, StorageError> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                "DELETE FROM api_tokens WHERE id = $1 AND company_id = $2",
                &[&id.0, &company.as_str()],
            )
            .await?;
        Ok(deleted > 0)
    }

    /// The company of the live (unexpired) token with this hash.
    pub async fn token_company(&self, hash: &[u8; 32]) -> Result<Option<CompanyId>, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT company_id FROM api_tokens
                 WHERE token_hash = $1 AND (expires_at IS NULL OR expires_at > now())",
                &[&hash.as_slice()],
            )
            .await?;
        row.map(|row| Ok(CompanyId::from_stored(row.try_get(0)?)))
            .transpose()
    }
}
