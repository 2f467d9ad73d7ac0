//! Webhook (subscription) rows.

use time::OffsetDateTime;
use tokio_postgres::Row;

use super::{Storage, StorageError};
use crate::domain::{CompanyId, EndpointUrl, SigningSecret, WebhookId};

/// A stored subscription. Values were validated when written.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: WebhookId,
    pub company_id: CompanyId,
    pub name: String,
    pub url: EndpointUrl,
    pub events: Vec<String>,
    pub secret: Option<SigningSecret>,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A validated new subscription.
#[derive(Debug)]
pub struct NewWebhook {
    pub company_id: CompanyId,
    pub name: String,
    pub url: EndpointUrl,
    pub events: Vec<String>,
    pub secret: Option<SigningSecret>,
    pub enabled: bool,
}

/// A validated partial update: `None` leaves a field as it is. `secret: Some(None)` removes it.
#[derive(Debug, Default)]
pub struct WebhookChanges {
    pub name: Option<String>,
    pub url: Option<EndpointUrl>,
    pub events: Option<Vec<String>>,
    pub secret: Option<Option<SigningSecret>>,
    pub enabled: Option<bool>,
}

const COLUMNS: &str = "id, company_id, name, url, events, secret, enabled, created_at, updated_at";

pub(super) fn from_row(row: &Row) -> Result<Webhook, StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("webhook {what}"));
    let url: String = row.try_get("url")?;
    let secret: Option<String> = row.try_get("secret")?;
    Ok(Webhook {
        id: WebhookId(row.try_get("id")?),
        company_id: CompanyId::parse(row.try_get::<_, String>("company_id")?)
            .map_err(|_| corrupt("company_id"))?,
        name: row.try_get("name")?,
        // Stored URLs passed the SSRF check of their time; delivery checks resolved addresses.
        url: EndpointUrl::parse(&url, true).map_err(|_| corrupt("url"))?,
        events: row.try_get("events")?,
        secret: secret
            .map(|s| SigningSecret::parse(&s))
            .transpose()
            .map_err(|_| corrupt("secret"))?,
        enabled: row.try_get("enabled")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Storage {
    pub async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO webhooks (id, company_id, name, url, events, secret, enabled)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
                ),
                &[
                    &WebhookId::new().0,
                    &new.company_id.as_str(),
                    &new.name,
                    &new.url.as_str(),
                    &new.events,
                    &new.secret.as_ref().map(SigningSecret::expose),
                    &new.enabled,
                ],
            )
            .await?;
        from_row(&row)
    }

    pub async fn webhook(&self, id: WebhookId) -> Result<Option<Webhook>, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1"),
                &[&id.0],
            )
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A company's webhooks, oldest first.
    pub async fn company_webhooks(
        &self,
        company: &CompanyId,
    ) -> Result<Vec<Webhook>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM webhooks WHERE company_id = $1 ORDER BY id"),
                &[&company.as_str()],
            )
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Applies `changes`; `None` when the webhook does not exist.
    pub async fn update_webhook(
        &self,
        id: WebhookId,
        changes: WebhookChanges,
    ) -> Result<Option<Webhook>, StorageError> {
        let client = self.client().await?;
        let (set_secret, secret) = match &changes.secret {
            Some(secret) => (true, secret.as_ref().map(SigningSecret::expose)),
            None => (false, None),
        };
        let row = client
            .query_opt(
                &format!(
                    "UPDATE webhooks SET
                        name = COALESCE($2, name),
                        url = COALESCE($3, url),
                        events = COALESCE($4, events),
                        secret = CASE WHEN $5 THEN $6 ELSE secret END,
                        enabled = COALESCE($7, enabled),
                        updated_at = now()
                     WHERE id = $1 RETURNING {COLUMNS}"
                ),
                &[
                    &id.0,
                    &changes.name,
                    &changes.url.as_ref().map(EndpointUrl::as_str),
                    &changes.events,
                    &set_secret,
                    &secret,
                    &changes.enabled,
                ],
            )
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Deletes a webhook with its deliveries and attempts, in one transaction; returns its
    /// company, or `None` when it did not exist.
    pub async fn delete_webhook(&self, id: WebhookId) -> Result<Option<String>, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "DELETE FROM webhooks WHERE id = $1 RETURNING company_id",
                &[&id.0],
            )
            .await?;
        tx.execute("DELETE FROM attempts WHERE webhook_id = $1", &[&id.0])
            .await?;
        tx.execute("DELETE FROM deliveries WHERE webhook_id = $1", &[&id.0])
            .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}
