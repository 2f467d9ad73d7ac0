//! The read side of the delivery log: attempts and deliveries as the API and CLI show them.

use time::OffsetDateTime;
use tokio_postgres::Row;

use super::{Storage, StorageError};
use std::time::Duration;

use crate::domain::{CompanyId, DeliveryId, DeliveryStatus, EventId, Trigger, WebhookId};

/// One attempt as the log holds it; `api::schema::Attempt` is what the API shows of it.
#[derive(Debug, Clone)]
pub struct AttemptView {
    /// Also the paging cursor.
    pub id: i64,
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event_type: String,
    pub attempt_number: u32,
    pub trigger: Trigger,
    pub attempted_at: OffsetDateTime,
    pub duration: Duration,
    pub response_status: Option<u16>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    /// `[name, value]` pairs.
    pub request_headers: serde_json::Value,
    /// In listings, a preview (`BODY_PREVIEW`).
    pub request_body: String,
    pub request_body_size: u64,
    pub response_headers: Option<serde_json::Value>,
    pub response_body: Option<String>,
    pub response_body_size: Option<u64>,
    pub response_body_truncated: bool,
    /// A body here is shorter than its size.
    pub body_preview: bool,
    pub delivery_status: DeliveryStatus,
}

/// Bytes of each body an attempt listing shows: a page of 500 attempts of 1 MiB events stays
/// a few MiB. One attempt asked for by its number shows its bodies whole.
pub const BODY_PREVIEW: usize = 4096;

/// How much of each body a query returns.
#[derive(Debug, Clone, Copy)]
enum Bodies {
    Preview,
    Whole,
}

/// One delivery as the log holds it; `api::schema::Delivery` is what the API shows of it.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub event_type: String,
    pub webhook_id: WebhookId,
    pub company_id: CompanyId,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    /// The last attempt's HTTP status, and its error when it had no response.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Filters for listing deliveries; every one optional, combined with AND.
#[derive(Debug, Default, Clone)]
pub struct DeliveryFilter {
    pub webhook_id: Option<WebhookId>,
    pub company_id: Option<CompanyId>,
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    /// Created at or after.
    pub since: Option<OffsetDateTime>,
    /// Created before.
    pub until: Option<OffsetDateTime>,
    /// Paging cursor: only deliveries older than this one (ids are time-ordered UUID v7).
    pub before: Option<DeliveryId>,
    pub limit: i64,
}

/// The attempt columns, with the bodies cut to a preview or whole; their full sizes beside.
fn attempt_columns(bodies: Bodies) -> String {
    let cut = match bodies {
        Bodies::Preview => BODY_PREVIEW,
        // substring's length is an int4.
        Bodies::Whole => i32::MAX as usize,
    };
    format!(
        "a.id, a.delivery_id, a.webhook_id, d.event_id, d.event_type, a.attempt_number,
         a.trigger, a.attempted_at, a.duration_ms, a.response_status, a.error_kind,
         a.error_message, a.request_headers, substring(e.body for {cut}) AS request_body,
         octet_length(e.body) AS request_body_size, a.response_headers,
         substring(a.response_body for {cut}) AS response_body,
         octet_length(a.response_body) AS response_body_size, a.response_body_truncated,
         d.status AS delivery_status"
    )
}

/// Attempts from `attempts` (the table, or a subquery that picked some) as `a`, with their
/// delivery and event, each read in its own partition only.
fn attempt_join(attempts: &str) -> String {
    format!(
        "{attempts} a JOIN deliveries d ON d.id = a.delivery_id AND {}
         JOIN events e ON e.id = d.event_id AND e.event_at = d.event_at",
        super::filed_by_id("d", "a.delivery_id")
    )
}

const DELIVERY_COLUMNS: &str = "id, event_id, event_type, webhook_id, company_id, status,
    attempt_count, last_status, last_error, next_attempt_at, created_at, updated_at";

fn lossy(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn corrupt(column: &str) -> StorageError {
    StorageError::Corrupt(format!("delivery log {column}"))
}

/// A count or size column, never negative as written.
fn unsigned<T: TryFrom<i32> + Default>(value: i32) -> T {
    T::try_from(value).unwrap_or_default()
}

fn status_code(value: Option<i32>) -> Option<u16> {
    value.and_then(|status| u16::try_from(status).ok())
}

fn delivery_status(row: &Row) -> Result<DeliveryStatus, StorageError> {
    let status: String = row.try_get("status")?;
    DeliveryStatus::parse(&status).ok_or_else(|| corrupt("status"))
}

fn attempt_view(row: &Row) -> Result<AttemptView, StorageError> {
    let attempt_number: i32 = row.try_get("attempt_number")?;
    let request_body: Vec<u8> = row
        .try_get::<_, Option<Vec<u8>>>("request_body")?
        .unwrap_or_default();
    let request_body_size: i32 = row
        .try_get::<_, Option<i32>>("request_body_size")?
        .unwrap_or(0);
    let response_body: Option<Vec<u8>> = row.try_get("response_body")?;
    let response_body_size: Option<i32> = row.try_get("response_body_size")?;
    let shorter = |shown: usize, size: i32| usize::try_from(size).is_ok_and(|size| shown < size);
    let body_preview = shorter(request_body.len(), request_body_size)
        || response_body
            .as_ref()
            .zip(response_body_size)
            .is_some_and(|(body, size)| shorter(body.len(), size));
    let trigger: String = row.try_get("trigger")?;
    let delivery_status: String = row.try_get("delivery_status")?;
    Ok(AttemptView {
        id: row.try_get("id")?,
        delivery_id: DeliveryId(row.try_get("delivery_id")?),
        webhook_id: WebhookId(row.try_get("webhook_id")?),
        event_id: EventId::from_stored(row.try_get("event_id")?),
        event_type: row.try_get("event_type")?,
        attempt_number: unsigned(attempt_number),
        trigger: Trigger::parse(&trigger).ok_or_else(|| corrupt("trigger"))?,
        attempted_at: row.try_get("attempted_at")?,
        duration: Duration::from_millis(unsigned(row.try_get::<_, i32>("duration_ms")?)),
        response_status: status_code(row.try_get("response_status")?),
        error_kind: row.try_get("error_kind")?,
        error_message: row.try_get("error_message")?,
        request_headers: row.try_get("request_headers")?,
        request_body: String::from_utf8_lossy(&request_body).into_owned(),
        request_body_size: unsigned(request_body_size),
        response_headers: row.try_get("response_headers")?,
        response_body: lossy(response_body),
        response_body_size: response_body_size.map(unsigned),
        response_body_truncated: row.try_get("response_body_truncated")?,
        body_preview,
        delivery_status: DeliveryStatus::parse(&delivery_status)
            .ok_or_else(|| corrupt("delivery_status"))?,
    })
}

fn delivery_view(row: &Row) -> Result<DeliveryView, StorageError> {
    Ok(DeliveryView {
        id: DeliveryId(row.try_get("id")?),
        event_id: EventId::from_stored(row.try_get("event_id")?),
        event_type: row.try_get("event_type")?,
        webhook_id: WebhookId(row.try_get("webhook_id")?),
        company_id: CompanyId::from_stored(row.try_get("company_id")?),
        status: delivery_status(row)?,
        attempt_count: unsigned(row.try_get("attempt_count")?),
        last_status: status_code(row.try_get("last_status")?),
        last_error: row.try_get("last_error")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Storage {
    /// A webhook's latest attempts, newest first, older than the `before` attempt id if given.
    pub async fn webhook_attempts(
        &self,
        webhook: WebhookId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AttemptView>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                // The page is picked from the attempts alone (the newest of each partition's
                // index, merged), then joined: joined first, every attempt of the webhook in
                // the log would be read before the limit.
                &format!(
                    "SELECT {} FROM {} ORDER BY a.id DESC",
                    attempt_columns(Bodies::Preview),
                    attempt_join(
                        "(SELECT * FROM attempts
                          WHERE webhook_id = $1 AND ($2::bigint IS NULL OR id < $2)
                          ORDER BY id DESC LIMIT $3)"
                    )
                ),
                &[&webhook.0, &before, &limit],
            )
            .await?;
        rows.iter().map(attempt_view).collect()
    }

    /// Attempt `number` of one delivery, its bodies whole.
    pub async fn delivery_attempt(
        &self,
        delivery: DeliveryId,
        number: i32,
    ) -> Result<Option<AttemptView>, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {} FROM {}
                     WHERE a.delivery_id = $1 AND a.attempt_number = $2",
                    attempt_columns(Bodies::Whole),
                    attempt_join("attempts")
                ),
                &[&delivery.0, &number],
            )
            .await?;
        row.as_ref().map(attempt_view).transpose()
    }

    /// Every attempt of one delivery, oldest first, bodies as previews.
    pub async fn delivery_attempts(
        &self,
        delivery: DeliveryId,
    ) -> Result<Vec<AttemptView>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM {}
                     WHERE a.delivery_id = $1 ORDER BY a.attempt_number",
                    attempt_columns(Bodies::Preview),
                    attempt_join("attempts")
                ),
                &[&delivery.0],
            )
            .await?;
        rows.iter().map(attempt_view).collect()
    }

    pub async fn delivery(&self, id: DeliveryId) -> Result<Option<DeliveryView>, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE id = $1 AND {}",
                    super::filed_by_id("d", "$1")
                ),
                &[&id.0],
            )
            .await?;
        row.as_ref().map(delivery_view).transpose()
    }

    /// Deliveries matching `filter`, newest first.
    pub async fn deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryView>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE ($1::uuid IS NULL OR webhook_id = $1)
                       AND ($2::text IS NULL OR company_id = $2)
                       AND ($3::text IS NULL OR status = $3)
                       AND ($4::text IS NULL OR event_type = $4)
                       AND ($5::timestamptz IS NULL OR created_at >= $5)
                       AND ($6::timestamptz IS NULL OR created_at < $6)
                       AND ($7::uuid IS NULL OR id < $7)
                     ORDER BY id DESC LIMIT $8"
                ),
                &[
                    &filter.webhook_id.map(|w| w.0),
                    &filter.company_id.as_ref().map(CompanyId::as_str),
                    &filter.status.map(DeliveryStatus::as_str),
                    &filter.event_type,
                    &filter.since,
                    &filter.until,
                    &filter.before.map(|d| d.0),
                    &filter.limit,
                ],
            )
            .await?;
        rows.iter().map(delivery_view).collect()
    }
}

/// A webhook's health as the API shows it.
#[derive(Debug, Clone, Copy)]
pub struct HealthView {
    pub last_success_at: Option<OffsetDateTime>,
    /// Failed deliveries since the last success, or since it was enabled again.
    pub failing_streak: u64,
    /// When its circuit was opened, while it is open.
    pub circuit_opened_at: Option<OffsetDateTime>,
}

impl Storage {
    /// When the webhook's latest successful delivery succeeded, its failing streak (the
    /// Failed deliveries auto-disable counts, since the last success or since it was enabled
    /// again) and its circuit. The dashboard asks every few seconds, so neither reads the
    /// streak's failures: the count is kept in `webhook_health`, and while a streak lasts the
    /// last success is among the deliveries created before it began.
    pub async fn webhook_health(&self, webhook: WebhookId) -> Result<HealthView, StorageError> {
        let client = self.client().await?;
        let health = client
            .query_opt(
                "SELECT failed_streak, failing_since, circuit_opened_at FROM webhook_health
                 WHERE webhook_id = $1",
                &[&webhook.0],
            )
            .await?;
        let (failed, since, circuit_opened_at) = match &health {
            Some(row) => (
                row.try_get::<_, i32>(0)?,
                row.try_get::<_, Option<OffsetDateTime>>(1)?,
                row.try_get::<_, Option<OffsetDateTime>>(2)?,
            ),
            None => (0, None, None),
        };
        let before = since
            .filter(|_| failed > 0)
            .map(|since| DeliveryId::lowest_at(since).0);
        let last_success = client
            .query_opt(
                "SELECT updated_at FROM deliveries
                 WHERE webhook_id = $1 AND status = 'succeeded' AND ($2::uuid IS NULL OR id < $2)
                 ORDER BY id DESC LIMIT 1",
                &[&webhook.0, &before],
            )
            .await?;
        Ok(HealthView {
            last_success_at: last_success.map(|row| row.try_get(0)).transpose()?,
            failing_streak: u64::try_from(failed).unwrap_or(0),
            circuit_opened_at,
        })
    }
}
