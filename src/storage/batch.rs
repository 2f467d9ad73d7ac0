//! Batched writes of delivery outcomes: one transaction for many deliveries, so the attempt
//! log costs a fraction of a round trip and a commit per delivery.

use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AttemptRecord, DeliveryStatus, Storage, StorageError, deliveries::headers_json};
use crate::{
    domain::{DeliveryId, WebhookId},
    outcome::FailureKind,
};

/// The event a fresh delivery belongs to, written with it (once per batch).
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: String,
    pub company_id: String,
    pub event_type: String,
    pub body: Bytes,
}

/// A delivery's new state, with the attempt that led to it (none for a deferral).
#[derive(Debug, Clone)]
pub struct DeliveryWrite {
    /// Set for deliveries created by the fan-out; `None` when the event row already exists.
    pub event: Option<EventRow>,
    pub delivery_id: DeliveryId,
    pub event_id: String,
    pub webhook_id: WebhookId,
    pub company_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made so far, including `attempt`.
    pub attempt_count: u32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub attempt: Option<AttemptRecord>,
}

impl DeliveryWrite {
    fn last_error(&self) -> Option<String> {
        let attempt = self.attempt.as_ref()?;
        let kind = attempt.error_kind?;
        Some(match &attempt.error_message {
            Some(message) => format!("{}: {message}", kind.as_str()),
            None => kind.as_str().to_owned(),
        })
    }
}

fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl Storage {
    /// Writes every event, delivery state and attempt of `writes` in one transaction.
    ///
    /// A delivery row only moves forward: an existing row is updated only by a write with more
    /// attempts, so a stale or repeated write changes nothing. An attempt whose delivery row
    /// is not the one stored (a duplicate publish of the same event) is not logged twice.
    pub async fn write_batch(&self, writes: &[DeliveryWrite]) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        insert_events(&tx, writes).await?;
        upsert_deliveries(&tx, writes).await?;
        insert_attempts(&tx, writes).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_events(
    tx: &deadpool_postgres::Transaction<'_>,
    writes: &[DeliveryWrite],
) -> Result<(), StorageError> {
    let mut seen = std::collections::HashSet::new();
    let events: Vec<&EventRow> = writes
        .iter()
        .filter_map(|w| w.event.as_ref())
        .filter(|e| seen.insert(e.id.as_str()))
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let companies: Vec<&str> = events.iter().map(|e| e.company_id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let bodies: Vec<&[u8]> = events.iter().map(|e| e.body.as_ref()).collect();
    tx.execute(
        "INSERT INTO events (id, company_id, event_type, body)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])
         ON CONFLICT (id) DO NOTHING",
        &[&ids, &companies, &types, &bodies],
    )
    .await?;
    Ok(())
}

async fn upsert_deliveries(
    tx: &deadpool_postgres::Transaction<'_>,
    writes: &[DeliveryWrite],
) -> Result<(), StorageError> {
    // One row per (event, webhook) and statement, the most advanced one: Postgres refuses to
    // update the same row twice in one INSERT ... ON CONFLICT.
    let mut latest: std::collections::HashMap<(&str, WebhookId), &DeliveryWrite> =
        std::collections::HashMap::with_capacity(writes.len());
    for write in writes {
        latest
            .entry((write.event_id.as_str(), write.webhook_id))
            .and_modify(|kept| {
                if write.attempt_count > kept.attempt_count {
                    *kept = write;
                }
            })
            .or_insert(write);
    }
    let rows: Vec<&DeliveryWrite> = latest.into_values().collect();
    let ids: Vec<Uuid> = rows.iter().map(|w| w.delivery_id.0).collect();
    let events: Vec<&str> = rows.iter().map(|w| w.event_id.as_str()).collect();
    let webhooks: Vec<Uuid> = rows.iter().map(|w| w.webhook_id.0).collect();
    let companies: Vec<&str> = rows.iter().map(|w| w.company_id.as_str()).collect();
    let types: Vec<&str> = rows.iter().map(|w| w.event_type.as_str()).collect();
    let statuses: Vec<&str> = rows.iter().map(|w| w.status.as_str()).collect();
    let counts: Vec<i32> = rows.iter().map(|w| to_i32(w.attempt_count)).collect();
    let last_statuses: Vec<Option<i32>> = rows
        .iter()
        .map(|w| w.attempt.as_ref()?.response_status.map(i32::from))
        .collect();
    let last_errors: Vec<Option<String>> = rows.iter().map(|w| w.last_error()).collect();
    let next_at: Vec<Option<OffsetDateTime>> = rows.iter().map(|w| w.next_attempt_at).collect();
    tx.execute(
        "INSERT INTO deliveries (id, event_id, webhook_id, company_id, event_type, status,
            attempt_count, last_status, last_error, next_attempt_at)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
            $6::text[], $7::int4[], $8::int4[], $9::text[], $10::timestamptz[])
         ON CONFLICT (event_id, webhook_id) DO UPDATE SET
            status = EXCLUDED.status, attempt_count = EXCLUDED.attempt_count,
            last_status = EXCLUDED.last_status, last_error = EXCLUDED.last_error,
            next_attempt_at = EXCLUDED.next_attempt_at, updated_at = now()
         WHERE deliveries.attempt_count < EXCLUDED.attempt_count",
        &[
            &ids,
            &events,
            &webhooks,
            &companies,
            &types,
            &statuses,
            &counts,
            &last_statuses,
            &last_errors,
            &next_at,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_attempts(
    tx: &deadpool_postgres::Transaction<'_>,
    writes: &[DeliveryWrite],
) -> Result<(), StorageError> {
    let attempts: Vec<&AttemptRecord> = writes.iter().filter_map(|w| w.attempt.as_ref()).collect();
    if attempts.is_empty() {
        return Ok(());
    }
    let deliveries: Vec<Uuid> = attempts.iter().map(|a| a.delivery_id.0).collect();
    let webhooks: Vec<Uuid> = attempts.iter().map(|a| a.webhook_id.0).collect();
    let numbers: Vec<i32> = attempts.iter().map(|a| to_i32(a.attempt_number)).collect();
    let triggers: Vec<&str> = attempts.iter().map(|a| a.trigger.as_str()).collect();
    let times: Vec<OffsetDateTime> = attempts.iter().map(|a| a.attempted_at).collect();
    let durations: Vec<i32> = attempts
        .iter()
        .map(|a| i32::try_from(a.duration.as_millis()).unwrap_or(i32::MAX))
        .collect();
    let request_headers: Vec<serde_json::Value> = attempts
        .iter()
        .map(|a| headers_json(&a.request_headers))
        .collect();
    let statuses: Vec<Option<i32>> = attempts
        .iter()
        .map(|a| a.response_status.map(i32::from))
        .collect();
    let response_headers: Vec<Option<serde_json::Value>> = attempts
        .iter()
        .map(|a| a.response_headers.as_deref().map(headers_json))
        .collect();
    let bodies: Vec<Option<&[u8]>> = attempts
        .iter()
        .map(|a| a.response_body.as_deref())
        .collect();
    let truncated: Vec<bool> = attempts.iter().map(|a| a.response_body_truncated).collect();
    let kinds: Vec<Option<&str>> = attempts
        .iter()
        .map(|a| a.error_kind.map(FailureKind::as_str))
        .collect();
    let messages: Vec<Option<&str>> = attempts
        .iter()
        .map(|a| a.error_message.as_deref())
        .collect();
    tx.execute(
        "INSERT INTO attempts (delivery_id, webhook_id, attempt_number, trigger, attempted_at,
            duration_ms, request_headers, response_status, response_headers, response_body,
            response_body_truncated, error_kind, error_message)
         SELECT u.* FROM unnest($1::uuid[], $2::uuid[], $3::int4[], $4::text[],
            $5::timestamptz[], $6::int4[], $7::jsonb[], $8::int4[], $9::jsonb[], $10::bytea[],
            $11::bool[], $12::text[], $13::text[])
            AS u(delivery_id, webhook_id, attempt_number, trigger, attempted_at, duration_ms,
                 request_headers, response_status, response_headers, response_body,
                 response_body_truncated, error_kind, error_message)
         JOIN deliveries d ON d.id = u.delivery_id
         ON CONFLICT (delivery_id, attempt_number) DO NOTHING",
        &[
            &deliveries,
            &webhooks,
            &numbers,
            &triggers,
            &times,
            &durations,
            &request_headers,
            &statuses,
            &response_headers,
            &bodies,
            &truncated,
            &kinds,
            &messages,
        ],
    )
    .await?;
    Ok(())
}
