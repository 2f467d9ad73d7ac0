//! Webhook (subscription) rows. Their signing keys are sealed under the key ring before they
//! are written and opened as they are read: the database never holds one in clear.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Row;

use super::{Storage, StorageError};
use crate::domain::{
    CompanyId, CustomHeaders, DisabledReason, EndpointUrl, EventFilter, KeyRing, PreviousKey,
    Signing, SigningKey, WebhookId,
};

/// A stored subscription. Values were validated when written.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: WebhookId,
    pub company_id: CompanyId,
    pub name: String,
    pub url: EndpointUrl,
    pub events: Vec<EventFilter>,
    /// `None`: requests go unsigned.
    pub signing: Option<Signing>,
    /// Sent with every attempt.
    pub headers: CustomHeaders,
    /// Attempts per second at most, across all workers.
    pub rate_limit: Option<u32>,
    pub enabled: bool,
    /// Why it is disabled, and since when; `None` while enabled.
    pub disabled: Option<(DisabledReason, OffsetDateTime)>,
    /// Whether a Failed delivery came after its last success: its next success ends the
    /// streak (and publishes `webhook.recovered`).
    pub failing: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A validated new subscription.
#[derive(Debug)]
pub struct NewWebhook {
    pub company_id: CompanyId,
    pub name: String,
    pub url: EndpointUrl,
    pub events: Vec<EventFilter>,
    pub signing_key: Option<SigningKey>,
    pub headers: CustomHeaders,
    pub rate_limit: Option<u32>,
    pub enabled: bool,
}

/// A validated partial update: `None` leaves a field as it is. `signing_key: Some(None)`
/// removes the key; setting or removing one ends a rotation's grace at once.
#[derive(Debug, Default)]
pub struct WebhookChanges {
    pub name: Option<String>,
    pub url: Option<EndpointUrl>,
    pub events: Option<Vec<EventFilter>>,
    pub signing_key: Option<Option<SigningKey>>,
    /// Replaces the headers (empty: none).
    pub headers: Option<CustomHeaders>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<u32>>,
    pub enabled: Option<bool>,
}

/// What a [`Webhook`] is read from, the table aliased `w`: its columns, and whether its
/// deliveries are failing (a streak in `webhook_health`).
pub(super) static COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let columns = "id, company_id, name, url, events, signing_key, previous_signing_key, \
        secret_rotation_ends_at, headers, rate_limit, enabled, disabled_reason, disabled_at, \
        created_at, updated_at";
    let columns: Vec<String> = columns.split(", ").map(|c| format!("w.{c}")).collect();
    format!(
        "{}, EXISTS (SELECT 1 FROM webhook_health h WHERE h.webhook_id = w.id \
            AND h.failed_streak > 0) AS failing",
        columns.join(", ")
    )
});

/// A rate limit as stored (validated to at most 10,000).
fn to_i32(limit: u32) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

/// What a webhook's sealed headers are bound to: its id, and the column (so sealed headers
/// cannot pass for a signing key).
fn headers_context(id: WebhookId) -> String {
    format!("{id}/headers")
}

pub(super) fn from_row(row: &Row, keys: &KeyRing) -> Result<Webhook, StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("webhook {what}"));
    let url: String = row.try_get("url")?;
    let id = WebhookId(row.try_get("id")?);
    let open = |column: &str| -> Result<Option<SigningKey>, StorageError> {
        let Some(sealed) = row.try_get::<_, Option<String>>(column)? else {
            return Ok(None);
        };
        let text = keys
            .open(&sealed, &id.to_string())
            .map_err(|e| StorageError::Sealed(format!("webhook {id}'s {column}: {e}")))?;
        SigningKey::parse(&text)
            .map(Some)
            .map_err(|_| corrupt(column))
    };
    let previous = match (
        open("previous_signing_key")?,
        row.try_get::<_, Option<OffsetDateTime>>("secret_rotation_ends_at")?,
    ) {
        (Some(key), Some(until)) if until > OffsetDateTime::now_utc() => {
            Some(PreviousKey { key, until })
        }
        _ => None,
    };
    Ok(Webhook {
        id,
        company_id: CompanyId::from_stored(row.try_get("company_id")?),
        name: row.try_get("name")?,
        // Stored URLs passed the SSRF check of their time; delivery checks resolved addresses.
        url: EndpointUrl::parse_stored(&url).map_err(|_| corrupt("url"))?,
        events: row
            .try_get::<_, Vec<String>>("events")?
            .iter()
            .map(|entry| EventFilter::from_stored(entry))
            .collect(),
        signing: open("signing_key")?.map(|key| Signing { key, previous }),
        headers: match row.try_get::<_, Option<String>>("headers")? {
            None => CustomHeaders::default(),
            Some(sealed) => {
                let text = keys
                    .open(&sealed, &headers_context(id))
                    .map_err(|e| StorageError::Sealed(format!("webhook {id}'s headers: {e}")))?;
                CustomHeaders::from_json(&text).ok_or_else(|| corrupt("headers"))?
            }
        },
        rate_limit: row
            .try_get::<_, Option<i32>>("rate_limit")?
            .map(|limit| u32::try_from(limit).map_err(|_| corrupt("rate_limit")))
            .transpose()?,
        enabled: row.try_get("enabled")?,
        disabled: match (
            row.try_get::<_, Option<String>>("disabled_reason")?,
            row.try_get::<_, Option<OffsetDateTime>>("disabled_at")?,
        ) {
            (Some(reason), Some(at)) => {
                let reason = DisabledReason::parse(&reason).ok_or_else(|| corrupt("reason"))?;
                Some((reason, at))
            }
            _ => None,
        },
        failing: row.try_get("failing")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Storage {
    pub async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, StorageError> {
        let client = self.client().await?;
        let id = WebhookId::new();
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO webhooks AS w
                        (id, company_id, name, url, events, signing_key, enabled, headers,
                         rate_limit)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {}",
                    *COLUMNS
                ),
                &[
                    &id.0,
                    &new.company_id.as_str(),
                    &new.name,
                    &new.url.as_str(),
                    &stored_events(&new.events),
                    &self.seal(new.signing_key.as_ref(), id),
                    &new.enabled,
                    &self.seal_headers(&new.headers, id),
                    &new.rate_limit.map(to_i32),
                ],
            )
            .await?;
        from_row(&row, &self.keys)
    }

    /// `headers` sealed for webhook `id`'s row; `None` when there are none.
    fn seal_headers(&self, headers: &CustomHeaders, id: WebhookId) -> Option<String> {
        (!headers.is_empty()).then(|| self.keys.seal(&headers.to_json(), &headers_context(id)))
    }

    /// `key` sealed for webhook `id`'s row.
    fn seal(&self, key: Option<&SigningKey>, id: WebhookId) -> Option<String> {
        key.map(|key| self.keys.seal(key.expose(), &id.to_string()))
    }

    pub async fn webhook(&self, id: WebhookId) -> Result<Option<Webhook>, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {} FROM webhooks w WHERE id = $1", *COLUMNS),
                &[&id.0],
            )
            .await?;
        row.as_ref()
            .map(|row| from_row(row, &self.keys))
            .transpose()
    }

    /// A company's webhooks, oldest first.
    pub async fn company_webhooks(
        &self,
        company: &CompanyId,
    ) -> Result<Vec<Webhook>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM webhooks w WHERE company_id = $1 ORDER BY id",
                    *COLUMNS
                ),
                &[&company.as_str()],
            )
            .await?;
        rows.iter().map(|row| from_row(row, &self.keys)).collect()
    }

    /// Applies `changes`; `None` when the webhook does not exist.
    pub async fn update_webhook(
        &self,
        id: WebhookId,
        changes: WebhookChanges,
    ) -> Result<Option<Webhook>, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        match changes.enabled {
            Some(false) => {
                let now = OffsetDateTime::now_utc();
                super::endpoint_health::disable_in(
                    &tx,
                    &self.keys,
                    id,
                    DisabledReason::Manual,
                    now,
                )
                .await?;
            }
            Some(true) => super::endpoint_health::enable_in(&tx, id).await?,
            None => {}
        }
        let (set_key, key) = match &changes.signing_key {
            Some(key) => (true, self.seal(key.as_ref(), id)),
            None => (false, None),
        };
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE webhooks AS w SET
                        name = COALESCE($2, name),
                        url = COALESCE($3, url),
                        events = COALESCE($4, events),
                        signing_key = CASE WHEN $5 THEN $6 ELSE signing_key END,
                        previous_signing_key = CASE WHEN $5 THEN NULL ELSE previous_signing_key END,
                        secret_rotation_ends_at =
                            CASE WHEN $5 THEN NULL ELSE secret_rotation_ends_at END,
                        headers = CASE WHEN $7 THEN $8 ELSE headers END,
                        rate_limit = CASE WHEN $9 THEN $10 ELSE rate_limit END,
                        updated_at = now()
                     WHERE id = $1 RETURNING {}",
                    *COLUMNS
                ),
                &[
                    &id.0,
                    &changes.name,
                    &changes.url.as_ref().map(EndpointUrl::as_str),
                    &changes.events.as_deref().map(stored_events),
                    &set_key,
                    &key,
                    &changes.headers.is_some(),
                    &changes
                        .headers
                        .as_ref()
                        .and_then(|headers| self.seal_headers(headers, id)),
                    &changes.rate_limit.is_some(),
                    &changes.rate_limit.flatten().map(to_i32),
                ],
            )
            .await?;
        tx.commit().await?;
        row.as_ref()
            .map(|row| from_row(row, &self.keys))
            .transpose()
    }

    /// Makes `key` the webhook's signing key; the key it replaces keeps signing beside it for
    /// `grace` (none when zero, or when there was none). `None` when the webhook does not exist.
    pub async fn rotate_signing_key(
        &self,
        id: WebhookId,
        key: &SigningKey,
        grace: Duration,
    ) -> Result<Option<Webhook>, StorageError> {
        let client = self.client().await?;
        let grace = (!grace.is_zero()).then_some(grace.as_secs_f64());
        let row = client
            .query_opt(
                &format!(
                    "UPDATE webhooks AS w SET
                        previous_signing_key = CASE WHEN $3::float8 IS NULL THEN NULL
                            ELSE signing_key END,
                        secret_rotation_ends_at = CASE
                            WHEN $3::float8 IS NULL OR signing_key IS NULL THEN NULL
                            ELSE now() + make_interval(secs => $3) END,
                        signing_key = $2,
                        updated_at = now()
                     WHERE id = $1 RETURNING {}",
                    *COLUMNS
                ),
                &[&id.0, &self.seal(Some(key), id), &grace],
            )
            .await?;
        row.as_ref()
            .map(|row| from_row(row, &self.keys))
            .transpose()
    }

    /// Opens one stored signing key of each key id in use: a key ring that lacks a key, or holds
    /// other bytes under its id, is refused here, at start, rather than on the first event of
    /// each company whose webhooks it cannot read.
    pub async fn verify_signing_keys(&self) -> Result<(), StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT ON (key_id) id, sealed, context, key_id FROM (
                    SELECT id, signing_key AS sealed, id::text AS context,
                        split_part(signing_key, ':', 2) AS key_id
                    FROM webhooks WHERE signing_key IS NOT NULL
                    UNION ALL
                    SELECT id, previous_signing_key, id::text,
                        split_part(previous_signing_key, ':', 2)
                    FROM webhooks WHERE previous_signing_key IS NOT NULL
                    UNION ALL
                    SELECT id, headers, id::text || '/headers', split_part(headers, ':', 2)
                    FROM webhooks WHERE headers IS NOT NULL
                 ) stored",
                &[],
            )
            .await?;
        for row in &rows {
            let id = WebhookId(row.try_get("id")?);
            let sealed: String = row.try_get("sealed")?;
            let context: String = row.try_get("context")?;
            self.keys.open(&sealed, &context).map_err(|e| {
                StorageError::Sealed(format!(
                    "webhook {id}'s sealed keys or headers do not open with \
                     security.secret_keys: {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// Seals again, under the key ring's first key, every signing key and header set sealed
    /// under another one, and seals the plain secrets an older version stored (emptying their
    /// column). Idempotent, and safe from several processes at once: a row changed meanwhile
    /// is left to its writer. Returns how many rows it changed.
    pub async fn reseal_signing_keys(&self) -> Result<u64, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, secret, signing_key, previous_signing_key, headers FROM webhooks
                 WHERE secret IS NOT NULL
                    OR split_part(signing_key, ':', 2) <> $1
                    OR split_part(previous_signing_key, ':', 2) <> $1
                    OR split_part(headers, ':', 2) <> $1",
                &[&self.keys.sealing_key_id()],
            )
            .await?;
        let mut changed = 0;
        for row in &rows {
            let id = WebhookId(row.try_get("id")?);
            let (plain, current, previous, headers): (
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
            ) = (
                row.try_get("secret")?,
                row.try_get("signing_key")?,
                row.try_get("previous_signing_key")?,
                row.try_get("headers")?,
            );
            let reseal =
                |sealed: &Option<String>, context: &str| -> Result<Option<String>, StorageError> {
                    let Some(sealed) = sealed else {
                        return Ok(None);
                    };
                    if self.keys.is_current(sealed) {
                        return Ok(Some(sealed.clone()));
                    }
                    let text = self
                        .keys
                        .open(sealed, context)
                        .map_err(|e| StorageError::Sealed(format!("webhook {id}: {e}")))?;
                    Ok(Some(self.keys.seal(&text, context)))
                };
            let keys_context = id.to_string();
            let new_current = match &plain {
                Some(secret) => Some(self.keys.seal(secret, &keys_context)),
                None => reseal(&current, &keys_context)?,
            };
            changed += client
                .execute(
                    "UPDATE webhooks SET secret = NULL, signing_key = $6, previous_signing_key = $7,
                        headers = $8
                     WHERE id = $1 AND secret IS NOT DISTINCT FROM $2
                       AND signing_key IS NOT DISTINCT FROM $3
                       AND previous_signing_key IS NOT DISTINCT FROM $4
                       AND headers IS NOT DISTINCT FROM $5",
                    &[
                        &id.0,
                        &plain,
                        &current,
                        &previous,
                        &headers,
                        &new_current,
                        &reseal(&previous, &keys_context)?,
                        &reseal(&headers, &headers_context(id))?,
                    ],
                )
                .await?;
        }
        Ok(changed)
    }

    /// Deletes a webhook with its deliveries and attempts, and the events no other delivery
    /// needs, in one transaction; returns its company, or `None` when it did not exist.
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
        tx.execute("DELETE FROM webhook_health WHERE webhook_id = $1", &[&id.0])
            .await?;
        tx.execute(
            "WITH gone AS (DELETE FROM deliveries WHERE webhook_id = $1 RETURNING event_id)
             DELETE FROM events e
             WHERE e.id IN (SELECT event_id FROM gone)
               AND NOT EXISTS (
                   SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.webhook_id <> $1)",
            &[&id.0],
        )
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}

/// A webhook's `events` as stored: each filter as written.
fn stored_events(filters: &[EventFilter]) -> Vec<String> {
    filters.iter().map(ToString::to_string).collect()
}
