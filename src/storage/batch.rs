//! Batched writes of delivery outcomes: one transaction for many deliveries, so the attempt
//! log costs a fraction of a round trip and a commit per delivery.

use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AttemptRecord, Storage, StorageError};
use crate::{
    domain::{CompanyId, DeliveryId, DeliveryStatus, EventId, WebhookId},
    outcome::FailureKind,
};

/// The event a fresh delivery belongs to, written with it (once per batch).
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: EventId,
    pub company_id: CompanyId,
    pub event_type: String,
    pub body: Bytes,
    /// The time the log files it under (`domain::event_time`), as its deliveries.
    pub event_at: OffsetDateTime,
}

/// A delivery's new state, with the attempt that led to it (none for a deferral).
#[derive(Debug, Clone)]
pub struct DeliveryWrite {
    /// Set for deliveries created by the fan-out; `None` when the event row already exists.
    pub event: Option<EventRow>,
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    pub webhook_id: WebhookId,
    pub company_id: CompanyId,
    pub event_type: String,
    /// The time its event is filed under: its partition, and part of the dedupe key.
    pub event_at: OffsetDateTime,
    pub status: DeliveryStatus,
    /// Attempts made so far, including `attempt`.
    pub attempt_count: u32,
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Set for a delivery parked in the database: its job is published when this passes.
    pub parked_until: Option<OffsetDateTime>,
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

/// Events, deliveries and attempts in one statement, so a batch costs one round trip and one
/// commit. The attempts join the deliveries the statement inserted or moved forward: a stale
/// write, or a duplicate publish of an event, logs no attempt.
///
/// The arrays are unnested in the select list (lockstep, like `unnest(a, b, ...)`), which
/// PostgreSQL streams row by row; `FROM unnest(...)` first copies every row into a tuplestore
/// (about a tenth of the statement's CPU in a 200-row batch).
const WRITE_BATCH: &str = "
WITH new_events AS (
    INSERT INTO events (id, company_id, event_type, body, event_at)
    SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::text[]), unnest($4::bytea[]),
        unnest($5::timestamptz[])
    ON CONFLICT (id, event_at) DO NOTHING
),
written AS (
    INSERT INTO deliveries AS d (id, event_id, webhook_id, company_id, event_type, status,
        attempt_count, last_status, last_error, next_attempt_at, parked_until, event_at)
    SELECT unnest($6::uuid[]), unnest($7::text[]), unnest($8::uuid[]), unnest($9::text[]),
        unnest($10::text[]), unnest($11::text[]), unnest($12::int4[]), unnest($13::int4[]),
        unnest($14::text[]), unnest($15::timestamptz[]), unnest($16::timestamptz[]),
        unnest($17::timestamptz[])
    ON CONFLICT (event_id, webhook_id, event_at) DO UPDATE SET
        status = EXCLUDED.status,
        -- A duplicate publish (another delivery id for the same event and webhook) adds its
        -- attempts after the existing ones, and becomes the alias its jobs are mapped by.
        attempt_count = CASE WHEN d.id = EXCLUDED.id THEN EXCLUDED.attempt_count
            ELSE d.attempt_count + EXCLUDED.attempt_count END,
        alias_id = CASE WHEN d.id = EXCLUDED.id THEN d.alias_id ELSE EXCLUDED.id END,
        alias_offset = CASE WHEN d.id = EXCLUDED.id THEN d.alias_offset ELSE d.attempt_count END,
        last_status = EXCLUDED.last_status, last_error = EXCLUDED.last_error,
        next_attempt_at = EXCLUDED.next_attempt_at, parked_until = EXCLUDED.parked_until,
        updated_at = now()
    WHERE (d.id = EXCLUDED.id AND d.attempt_count < EXCLUDED.attempt_count)
        -- Parking an untried delivery that a redelivered event found pending (its earlier
        -- hand-off may never have been published: without it the row keeps no job), or a
        -- due job behind an open circuit: its attempts stay as they are.
        OR (d.id = EXCLUDED.id AND EXCLUDED.parked_until IS NOT NULL
            AND d.status IN ('pending', 'retrying') AND d.attempt_count = EXCLUDED.attempt_count)
        -- A duplicate publish, once (a batch written again finds its alias in place).
        OR (d.id <> EXCLUDED.id AND d.alias_id IS DISTINCT FROM EXCLUDED.id)
    RETURNING d.id, d.alias_id, d.attempt_count
),
-- The ids attempts name: a delivery's own, and the alias a duplicate publish wrote under.
written_ids AS (
    SELECT id AS named, id, attempt_count FROM written
    UNION ALL
    SELECT alias_id, id, attempt_count FROM written WHERE alias_id IS NOT NULL
)
INSERT INTO attempts (delivery_id, webhook_id, attempt_number, trigger, attempted_at,
    duration_ms, request_headers, response_status, response_headers, response_body,
    response_body_truncated, error_kind, error_message)
SELECT w.id, u.webhook_id,
    -- A duplicate's first attempt is the existing delivery's newest.
    CASE WHEN w.named = w.id THEN u.attempt_number ELSE w.attempt_count END,
    u.trigger, u.attempted_at, u.duration_ms, u.request_headers, u.response_status,
    u.response_headers, u.response_body, u.response_body_truncated, u.error_kind,
    u.error_message
FROM (
    SELECT unnest($18::uuid[]) AS delivery_id, unnest($19::uuid[]) AS webhook_id,
        unnest($20::int4[]) AS attempt_number, unnest($21::text[]) AS trigger,
        unnest($22::timestamptz[]) AS attempted_at, unnest($23::int4[]) AS duration_ms,
        unnest($24::text[])::json AS request_headers, unnest($25::int4[]) AS response_status,
        unnest($26::text[])::json AS response_headers, unnest($27::bytea[]) AS response_body,
        unnest($28::bool[]) AS response_body_truncated, unnest($29::text[]) AS error_kind,
        unnest($30::text[]) AS error_message
) AS u
JOIN written_ids w ON w.named = u.delivery_id
ON CONFLICT (delivery_id, attempt_number) DO NOTHING";

impl Storage {
    /// Writes every event, delivery state and attempt of `writes` in one statement.
    ///
    /// A delivery row only moves forward: an existing row is updated only by a write with more
    /// attempts (or one that parks it while it is pending and untried), so a stale or repeated
    /// write changes nothing.
    ///
    /// A row filed under a time no partition holds yet makes the partitions it needs, and the
    /// batch is written again.
    pub async fn write_batch(&self, writes: &[DeliveryWrite]) -> Result<(), StorageError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.write_batch_once(writes).await {
                Err(StorageError::Db(e)) if tries < 3 && is_transient(&e) => {
                    tracing::debug!(error = %e, "batch write conflicted; retrying");
                }
                Err(StorageError::Db(e)) if tries < 3 && finds_no_partition(&e) => {
                    let times: Vec<_> = writes.iter().map(|w| w.event_at).collect();
                    let created = self
                        .create_partitions_for(self.log_partition, &times)
                        .await?;
                    tracing::info!(
                        partitions = created,
                        "created partitions the log's writes needed"
                    );
                }
                other => return other,
            }
        }
    }

    async fn write_batch_once(&self, writes: &[DeliveryWrite]) -> Result<(), StorageError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(WRITE_BATCH).await?;
        let events = EventColumns::new(writes);
        let deliveries = DeliveryColumns::new(writes);
        let attempts = AttemptColumns::new(writes);
        let mut params: Vec<Param<'_>> = Vec::with_capacity(30);
        params.extend(events.params());
        params.extend(deliveries.params());
        params.extend(attempts.params());
        client.execute(&statement, &params).await?;
        Ok(())
    }
}

/// A row whose partition key no partition holds.
fn finds_no_partition(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION)
        && error
            .as_db_error()
            .is_some_and(|db| db.message().starts_with("no partition of relation"))
}

/// Deadlocks and serialization failures: the statement may simply be run again.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        error.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Distinct events of a batch, as columns.
struct EventColumns<'a> {
    ids: Vec<&'a str>,
    companies: Vec<&'a str>,
    types: Vec<&'a str>,
    bodies: Vec<&'a [u8]>,
    times: Vec<OffsetDateTime>,
}

impl<'a> EventColumns<'a> {
    fn new(writes: &'a [DeliveryWrite]) -> Self {
        let mut seen = std::collections::HashSet::new();
        let mut events: Vec<&EventRow> = writes
            .iter()
            .filter_map(|w| w.event.as_ref())
            .filter(|e| seen.insert(e.id.as_str()))
            .collect();
        // Concurrent batches take row locks in one order, so they cannot deadlock.
        events.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Self {
            ids: events.iter().map(|e| e.id.as_str()).collect(),
            companies: events.iter().map(|e| e.company_id.as_str()).collect(),
            types: events.iter().map(|e| e.event_type.as_str()).collect(),
            bodies: events.iter().map(|e| e.body.as_ref()).collect(),
            times: events.iter().map(|e| e.event_at).collect(),
        }
    }

    fn params(&self) -> [Param<'_>; 5] {
        [
            &self.ids,
            &self.companies,
            &self.types,
            &self.bodies,
            &self.times,
        ]
    }
}

/// One row per (event, webhook), the most advanced: Postgres refuses to update the same row
/// twice in one INSERT ... ON CONFLICT.
struct DeliveryColumns<'a> {
    ids: Vec<Uuid>,
    events: Vec<&'a str>,
    webhooks: Vec<Uuid>,
    companies: Vec<&'a str>,
    types: Vec<&'a str>,
    statuses: Vec<&'static str>,
    counts: Vec<i32>,
    last_statuses: Vec<Option<i32>>,
    last_errors: Vec<Option<String>>,
    next_at: Vec<Option<OffsetDateTime>>,
    parked_until: Vec<Option<OffsetDateTime>>,
    event_at: Vec<OffsetDateTime>,
}

impl<'a> DeliveryColumns<'a> {
    fn new(writes: &'a [DeliveryWrite]) -> Self {
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
        let mut rows: Vec<&DeliveryWrite> = latest.into_values().collect();
        rows.sort_unstable_by(|a, b| (&a.event_id, a.webhook_id).cmp(&(&b.event_id, b.webhook_id)));
        Self {
            ids: rows.iter().map(|w| w.delivery_id.0).collect(),
            events: rows.iter().map(|w| w.event_id.as_str()).collect(),
            webhooks: rows.iter().map(|w| w.webhook_id.0).collect(),
            companies: rows.iter().map(|w| w.company_id.as_str()).collect(),
            types: rows.iter().map(|w| w.event_type.as_str()).collect(),
            statuses: rows.iter().map(|w| w.status.as_str()).collect(),
            counts: rows.iter().map(|w| to_i32(w.attempt_count)).collect(),
            last_statuses: rows
                .iter()
                .map(|w| w.attempt.as_ref()?.response_status.map(i32::from))
                .collect(),
            last_errors: rows.iter().map(|w| w.last_error()).collect(),
            next_at: rows.iter().map(|w| w.next_attempt_at).collect(),
            parked_until: rows.iter().map(|w| w.parked_until).collect(),
            event_at: rows.iter().map(|w| w.event_at).collect(),
        }
    }

    fn params(&self) -> [Param<'_>; 12] {
        [
            &self.ids,
            &self.events,
            &self.webhooks,
            &self.companies,
            &self.types,
            &self.statuses,
            &self.counts,
            &self.last_statuses,
            &self.last_errors,
            &self.next_at,
            &self.parked_until,
            &self.event_at,
        ]
    }
}

/// The attempts of a batch, as columns.
struct AttemptColumns<'a> {
    deliveries: Vec<Uuid>,
    webhooks: Vec<Uuid>,
    numbers: Vec<i32>,
    triggers: Vec<&'static str>,
    times: Vec<OffsetDateTime>,
    durations: Vec<i32>,
    /// JSON text, sent as text: PostgreSQL checks it as it casts it to `json`.
    request_headers: Vec<&'a str>,
    statuses: Vec<Option<i32>>,
    response_headers: Vec<Option<&'a str>>,
    bodies: Vec<Option<&'a [u8]>>,
    truncated: Vec<bool>,
    kinds: Vec<Option<&'static str>>,
    messages: Vec<Option<&'a str>>,
}

impl<'a> AttemptColumns<'a> {
    fn new(writes: &'a [DeliveryWrite]) -> Self {
        let mut attempts: Vec<&AttemptRecord> =
            writes.iter().filter_map(|w| w.attempt.as_ref()).collect();
        attempts.sort_unstable_by_key(|a| (a.delivery_id, a.attempt_number));
        Self {
            deliveries: attempts.iter().map(|a| a.delivery_id.0).collect(),
            webhooks: attempts.iter().map(|a| a.webhook_id.0).collect(),
            numbers: attempts.iter().map(|a| to_i32(a.attempt_number)).collect(),
            triggers: attempts.iter().map(|a| a.trigger.as_str()).collect(),
            times: attempts.iter().map(|a| a.attempted_at).collect(),
            durations: attempts
                .iter()
                .map(|a| i32::try_from(a.duration.as_millis()).unwrap_or(i32::MAX))
                .collect(),
            request_headers: attempts
                .iter()
                .map(|a| a.request_headers.as_str())
                .collect(),
            statuses: attempts
                .iter()
                .map(|a| a.response_status.map(i32::from))
                .collect(),
            response_headers: attempts
                .iter()
                .map(|a| a.response_headers.as_deref())
                .collect(),
            bodies: attempts
                .iter()
                .map(|a| a.response_body.as_deref())
                .collect(),
            truncated: attempts.iter().map(|a| a.response_body_truncated).collect(),
            kinds: attempts
                .iter()
                .map(|a| a.error_kind.map(FailureKind::as_str))
                .collect(),
            messages: attempts
                .iter()
                .map(|a| a.error_message.as_deref())
                .collect(),
        }
    }

    fn params(&self) -> [Param<'_>; 13] {
        [
            &self.deliveries,
            &self.webhooks,
            &self.numbers,
            &self.triggers,
            &self.times,
            &self.durations,
            &self.request_headers,
            &self.statuses,
            &self.response_headers,
            &self.bodies,
            &self.truncated,
            &self.kinds,
            &self.messages,
        ]
    }
}
