//! Events, deliveries and the attempt log: the durable outcomes the broker acks wait for.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Storage, StorageError, webhooks::Webhook};
use crate::{
    domain::{CompanyId, DeliveryId, DeliveryStatus, EventId, StoredDelivery, Trigger, WebhookId},
    outcome::FailureKind,
};

/// A stored delivery of a redelivered event, with how far it already got.
#[derive(Debug, Clone)]
pub struct PreparedDelivery {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    /// The time it is filed under, which a redelivery's writes must repeat.
    pub event_at: OffsetDateTime,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
}

impl PreparedDelivery {
    /// The event's inline first attempt is due only if nothing was recorded yet: a redelivered
    /// event whose delivery succeeded, or went on to a retry tier, is not sent again.
    pub fn needs_first_attempt(&self) -> bool {
        self.status == DeliveryStatus::Pending && self.attempt_count == 0
    }
}

/// One HTTP attempt, as the log keeps it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub attempt_number: u32,
    pub trigger: Trigger,
    pub attempted_at: OffsetDateTime,
    pub duration: Duration,
    /// JSON: an array of `[name, value]` pairs.
    pub request_headers: String,
    pub response_status: Option<u16>,
    /// JSON, as `request_headers`.
    pub response_headers: Option<String>,
    pub response_body: Option<Vec<u8>>,
    pub response_body_truncated: bool,
    pub error_kind: Option<FailureKind>,
    pub error_message: Option<String>,
}

/// What a delivery job needs from the database before it may attempt.
#[derive(Debug)]
pub struct JobTarget {
    /// The delivery's own id: another than the job's when the job was published by a
    /// duplicate publish of its event, under its alias.
    pub delivery_id: DeliveryId,
    /// For a job found by its alias: attempts the delivery had made before the duplicate,
    /// which the job's attempt number counts on from.
    pub alias_offset: Option<u32>,
    /// The time the delivery is filed under, which the job's writes repeat.
    pub event_at: OffsetDateTime,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub webhook: Webhook,
}

pub(super) fn to_u32(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The columns `id`, `webhook_id`, `event_id` and `event_type` of a deliveries row.
pub(super) fn stored_delivery(row: &tokio_postgres::Row) -> Result<StoredDelivery, StorageError> {
    Ok(StoredDelivery {
        delivery_id: DeliveryId(row.try_get("id")?),
        webhook_id: WebhookId(row.try_get("webhook_id")?),
        event_id: EventId::from_stored(row.try_get("event_id")?),
        event_type: row.try_get("event_type")?,
    })
}

fn parse_status(value: &str) -> Result<DeliveryStatus, StorageError> {
    DeliveryStatus::parse(value).ok_or_else(|| StorageError::Corrupt(format!("status {value:?}")))
}

/// A delivery (by its id or its alias) with its webhook: what a job needs to run.
static JOB_TARGET: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT d.id AS delivery_id, d.alias_id, d.alias_offset, d.event_at, d.status,
            d.attempt_count, {}
         FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE (d.id = $1 OR d.alias_id = $1) AND {}",
        *super::webhooks::COLUMNS,
        super::filed_by_id("d", "$1")
    )
});

impl Storage {
    /// The deliveries already made for `event` to any of `webhooks`, with their progress: the
    /// dedupe check of a redelivered event.
    pub async fn existing_deliveries(
        &self,
        event: &EventId,
        webhooks: &[WebhookId],
    ) -> Result<Vec<PreparedDelivery>, StorageError> {
        let client = self.client().await?;
        let webhook_ids: Vec<Uuid> = webhooks.iter().map(|w| w.0).collect();
        let rows = client
            .query(
                "SELECT id, webhook_id, event_at, status, attempt_count FROM deliveries
                 WHERE event_id = $1 AND webhook_id = ANY($2)",
                &[&event.as_str(), &webhook_ids],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PreparedDelivery {
                    delivery_id: DeliveryId(row.try_get("id")?),
                    webhook_id: WebhookId(row.try_get("webhook_id")?),
                    event_at: row.try_get("event_at")?,
                    status: parse_status(row.try_get("status")?)?,
                    attempt_count: to_u32(row.try_get("attempt_count")?),
                })
            })
            .collect()
    }

    /// The delivery and its webhook, for a job about to attempt; `None` when the webhook (and
    /// with it the delivery) was deleted meanwhile.
    pub async fn job_target(&self, id: DeliveryId) -> Result<Option<JobTarget>, StorageError> {
        let client = self.client().await?;
        let row = client.query_opt(JOB_TARGET.as_str(), &[&id.0]).await?;
        let Some(row) = row else { return Ok(None) };
        let delivery_id = DeliveryId(row.try_get("delivery_id")?);
        let alias_offset = if delivery_id == id {
            None
        } else {
            Some(to_u32(
                row.try_get::<_, Option<i32>>("alias_offset")?.unwrap_or(0),
            ))
        };
        Ok(Some(JobTarget {
            delivery_id,
            alias_offset,
            event_at: row.try_get("event_at")?,
            status: parse_status(row.try_get("status")?)?,
            attempt_count: to_u32(row.try_get("attempt_count")?),
            webhook: super::webhooks::from_row(&row, &self.keys)?,
        }))
    }

    /// Marks a delivery Failed once attempt `attempt_number` is its latest recorded one: not
    /// before that attempt's row is committed (the log would show Failed with an attempt
    /// missing), and not after a newer attempt (a manual retry overtook the dead letter).
    /// Returns whether it changed.
    pub async fn mark_failed(
        &self,
        id: DeliveryId,
        attempt_number: u32,
        reason: Option<&str>,
    ) -> Result<bool, StorageError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                &format!(
                    "UPDATE deliveries d SET status = 'failed', next_attempt_at = NULL,
                        parked_until = NULL, last_error = COALESCE($3, last_error),
                        updated_at = now()
                     WHERE id = $1 AND {} AND attempt_count = $2 AND status <> 'succeeded'",
                    super::filed_by_id("d", "$1")
                ),
                &[&id.0, &to_i32(attempt_number), &reason],
            )
            .await?;
        Ok(changed > 0)
    }
}

/// A delivery about to be re-sent by hand, with its event's exact bytes.
#[derive(Debug, Clone)]
pub struct RetryTarget {
    pub delivery: StoredDelivery,
    pub company_id: CompanyId,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub body: Vec<u8>,
}

/// Whose Failed deliveries a replay takes.
#[derive(Debug, Clone)]
pub enum ReplayScope {
    Webhook(WebhookId),
    Company(crate::domain::CompanyId),
}

/// A creation-time window: `since` inclusive, `until` exclusive, both optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

const RETRY_TARGET: &str = "SELECT d.id, d.webhook_id, d.company_id, d.event_id, d.event_type,
    d.status, d.attempt_count, e.body
    FROM deliveries d JOIN events e ON e.id = d.event_id AND e.event_at = d.event_at";

fn retry_target(row: &tokio_postgres::Row) -> Result<RetryTarget, StorageError> {
    Ok(RetryTarget {
        delivery: stored_delivery(row)?,
        company_id: CompanyId::from_stored(row.try_get("company_id")?),
        status: parse_status(row.try_get("status")?)?,
        attempt_count: to_u32(row.try_get("attempt_count")?),
        body: row.try_get("body")?,
    })
}

fn scope_params(scope: &ReplayScope) -> (Option<Uuid>, Option<&str>) {
    match scope {
        ReplayScope::Webhook(id) => (Some(id.0), None),
        ReplayScope::Company(company) => (None, Some(company.as_str())),
    }
}

const FAILED_IN_SCOPE: &str = "d.status = 'failed'
    AND ($1::uuid IS NULL OR d.webhook_id = $1) AND ($2::text IS NULL OR d.company_id = $2)
    AND ($3::timestamptz IS NULL OR d.created_at >= $3)
    AND ($4::timestamptz IS NULL OR d.created_at < $4)";

impl Storage {
    pub async fn retry_target(&self, id: DeliveryId) -> Result<Option<RetryTarget>, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "{RETRY_TARGET} WHERE d.id = $1 AND {}",
                    super::filed_by_id("d", "$1")
                ),
                &[&id.0],
            )
            .await?;
        row.as_ref().map(retry_target).transpose()
    }

    /// Failed deliveries in scope and window, oldest first, after the `after` cursor.
    pub async fn failed_deliveries(
        &self,
        scope: &ReplayScope,
        window: Window,
        after: Option<DeliveryId>,
        limit: i64,
    ) -> Result<Vec<RetryTarget>, StorageError> {
        let client = self.client().await?;
        let (webhook, company) = scope_params(scope);
        let rows = client
            .query(
                &format!(
                    "{RETRY_TARGET} WHERE {FAILED_IN_SCOPE}
                       AND ($5::uuid IS NULL OR d.id > $5)
                     ORDER BY d.id LIMIT $6"
                ),
                &[
                    &webhook,
                    &company,
                    &window.since,
                    &window.until,
                    &after.map(|d| d.0),
                    &limit,
                ],
            )
            .await?;
        rows.iter().map(retry_target).collect()
    }

    /// How many Failed deliveries each webhook in scope has in the window.
    pub async fn count_failed(
        &self,
        scope: &ReplayScope,
        window: Window,
    ) -> Result<Vec<(WebhookId, i64)>, StorageError> {
        let client = self.client().await?;
        let (webhook, company) = scope_params(scope);
        let rows = client
            .query(
                &format!(
                    "SELECT d.webhook_id, count(*) FROM deliveries d WHERE {FAILED_IN_SCOPE}
                     GROUP BY d.webhook_id ORDER BY d.webhook_id"
                ),
                &[&webhook, &company, &window.since, &window.until],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((WebhookId(r.try_get(0)?), r.try_get(1)?)))
            .collect()
    }

    /// Marks deliveries whose manual job was just published as pending again, if they are still
    /// in the status they were picked in. Pending deliveries are not picked again, so a second
    /// replay does not enqueue them twice.
    pub async fn mark_requeued(
        &self,
        ids: &[DeliveryId],
        from: DeliveryStatus,
    ) -> Result<u64, StorageError> {
        let client = self.client().await?;
        let ids = super::delivery_uuids(ids);
        Ok(client
            .execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = now(),
                    updated_at = now()
                 WHERE id = ANY($1) AND status = $2",
                &[&ids, &from.as_str()],
            )
            .await?)
    }
}
