//! Each webhook's failing streak (`webhook_health`), its enabling and disabling, and the
//! operational events they lead to: each event is written in the transaction that changes what
//! it reports, and published from there (`drain_operational`).

use time::OffsetDateTime;
use tokio_postgres::Transaction;

use super::{Storage, StorageError, Webhook, webhooks::COLUMNS};
use crate::{
    circuit::Transition,
    domain::{DisabledReason, KeyRing, WebhookId},
    endpoint_health::{self, About, OperationalEvent, Policy, Streak, Verdict},
};

fn about(webhook: &Webhook) -> About<'_> {
    About {
        webhook_id: webhook.id,
        company_id: &webhook.company_id,
        name: &webhook.name,
        url: webhook.url.as_str(),
    }
}

fn to_u32(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// Adds `event` to those waiting to be published.
pub(super) async fn insert_event(
    tx: &Transaction<'_>,
    event: &OperationalEvent,
) -> Result<(), StorageError> {
    tx.execute(
        "INSERT INTO operational_events (id, event_type, body) VALUES ($1, $2, $3)",
        &[&event.id, &event.event_type, &event.body],
    )
    .await?;
    Ok(())
}

/// The webhook's failing streak, if it has one.
async fn streak_of(
    tx: &Transaction<'_>,
    id: WebhookId,
) -> Result<Option<(u32, OffsetDateTime)>, StorageError> {
    let row = tx
        .query_opt(
            "SELECT failed_streak, failing_since FROM webhook_health
             WHERE webhook_id = $1 AND failed_streak > 0 AND failing_since IS NOT NULL",
            &[&id.0],
        )
        .await?;
    row.map(|row| Ok((to_u32(row.try_get(0)?), row.try_get(1)?)))
        .transpose()
}

/// Disables an enabled webhook for `reason` inside `tx`, with its `webhook.disabled` event.
/// `None` when it was disabled already (or does not exist).
pub(super) async fn disable_in(
    tx: &Transaction<'_>,
    keys: &KeyRing,
    id: WebhookId,
    reason: DisabledReason,
    now: OffsetDateTime,
) -> Result<Option<Webhook>, StorageError> {
    let row = tx
        .query_opt(
            &format!(
                "UPDATE webhooks AS w SET enabled = false, disabled_reason = $2,
                    disabled_at = $3, updated_at = now()
                 WHERE id = $1 AND enabled RETURNING {}",
                *COLUMNS
            ),
            &[&id.0, &reason.as_str(), &now],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let webhook = super::webhooks::from_row(&row, keys)?;
    let streak = streak_of(tx, id).await?;
    let event = endpoint_health::disabled(about(&webhook), reason, streak, now);
    insert_event(tx, &event).await?;
    Ok(Some(webhook))
}

/// Enables a disabled webhook inside `tx`: its reason goes, and its failing streak with it
/// (what failed meanwhile is for `recover` to send again).
pub(super) async fn enable_in(tx: &Transaction<'_>, id: WebhookId) -> Result<(), StorageError> {
    let enabled = tx
        .execute(
            "UPDATE webhooks SET enabled = true, disabled_reason = NULL, disabled_at = NULL,
                updated_at = now()
             WHERE id = $1 AND NOT enabled",
            &[&id.0],
        )
        .await?;
    if enabled > 0 {
        tx.execute("DELETE FROM webhook_health WHERE webhook_id = $1", &[&id.0])
            .await?;
    }
    Ok(())
}

impl Storage {
    /// Disables an enabled webhook for `reason`, with its `webhook.disabled` event. `None` when
    /// it was disabled already (or is gone): a second 410 changes nothing. Its retries still
    /// waiting end Failed as they come due (see `settle::admit`).
    pub async fn disable_webhook(
        &self,
        id: WebhookId,
        reason: DisabledReason,
    ) -> Result<Option<Webhook>, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = OffsetDateTime::now_utc();
        let disabled = disable_in(&tx, &self.keys, id, reason, now).await?;
        tx.commit().await?;
        Ok(disabled)
    }

    /// Counts a Failed delivery of `webhook` in its streak, then warns (`webhook.failing`) or
    /// disables it (`failing_too_long`) as `policy` decides, in one transaction. Concurrent
    /// failures of one webhook queue on its row, so each sees the streak the one before left.
    /// A webhook disabled meanwhile (its attempts in flight still end) is neither counted nor
    /// warned about: enabling it starts a new streak anyway. Returns what was done.
    pub async fn note_failed(
        &self,
        webhook: &Webhook,
        policy: &Policy,
    ) -> Result<Verdict, StorageError> {
        self.note_failures(webhook, 1, policy).await
    }

    /// `note_failed` for `failed` deliveries at once (those an open circuit kept untried
    /// past their schedule).
    pub async fn note_failures(
        &self,
        webhook: &Webhook,
        failed: u32,
        policy: &Policy,
    ) -> Result<Verdict, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = OffsetDateTime::now_utc();
        let row = tx
            .query_opt(
                "INSERT INTO webhook_health AS h
                    (webhook_id, company_id, failed_streak, failing_since, last_failure_at)
                 SELECT $1, $2, $4, $3, $3
                 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $1 AND enabled)
                 ON CONFLICT (webhook_id) DO UPDATE SET
                    failed_streak = h.failed_streak + $4,
                    failing_since = COALESCE(h.failing_since, $3),
                    last_failure_at = $3
                 RETURNING failed_streak, failing_since, warned_at",
                &[
                    &webhook.id.0,
                    &webhook.company_id.as_str(),
                    &now,
                    &i32::try_from(failed).unwrap_or(i32::MAX),
                ],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Verdict::Nothing);
        };
        let streak = Streak {
            failed: to_u32(row.try_get(0)?),
            since: row.try_get::<_, Option<OffsetDateTime>>(1)?.unwrap_or(now),
            warned_at: row.try_get(2)?,
        };
        let mut verdict = endpoint_health::after_failure(streak, now, policy);
        match verdict {
            Verdict::Nothing => {}
            Verdict::Warn => {
                tx.execute(
                    "UPDATE webhook_health SET warned_at = $2 WHERE webhook_id = $1",
                    &[&webhook.id.0, &now],
                )
                .await?;
                let event = endpoint_health::failing(about(webhook), streak, policy, now);
                insert_event(&tx, &event).await?;
            }
            Verdict::Disable => {
                let reason = DisabledReason::FailingTooLong;
                if disable_in(&tx, &self.keys, webhook.id, reason, now)
                    .await?
                    .is_none()
                {
                    verdict = Verdict::Nothing;
                }
            }
        }
        tx.commit().await?;
        Ok(verdict)
    }

    /// Ends `webhook`'s failing streak after a success, with its `webhook.recovered` event.
    /// False when it had none (another success ended it first).
    pub async fn note_recovered(&self, webhook: &Webhook) -> Result<bool, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "WITH ended AS (
                    SELECT webhook_id, failed_streak, failing_since FROM webhook_health
                    WHERE webhook_id = $1 AND failed_streak > 0 FOR UPDATE
                 )
                 UPDATE webhook_health h
                 SET failed_streak = 0, failing_since = NULL, warned_at = NULL
                 FROM ended WHERE h.webhook_id = ended.webhook_id
                 RETURNING ended.failed_streak, ended.failing_since",
                &[&webhook.id.0],
            )
            .await?;
        let Some(row) = row else { return Ok(false) };
        let now = OffsetDateTime::now_utc();
        let since = row.try_get::<_, Option<OffsetDateTime>>(1)?.unwrap_or(now);
        let event = endpoint_health::recovered(about(webhook), to_u32(row.try_get(0)?), since, now);
        insert_event(&tx, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Writes that a circuit of `webhook`'s endpoint opened or closed, with its
    /// `webhook.circuit_opened` or `webhook.circuit_closed` event. With several workers, each
    /// with its own breaker, only the first to open and the first to close change the state,
    /// so each change is told once. A close releases the webhook's parked deliveries. Returns
    /// whether the state changed.
    pub async fn note_circuit(
        &self,
        webhook: &Webhook,
        transition: Transition,
    ) -> Result<bool, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = OffsetDateTime::now_utc();
        let event = match transition {
            Transition::Opened => {
                let opened = tx
                    .execute(
                        "INSERT INTO webhook_health AS h (webhook_id, company_id, circuit_opened_at)
                         VALUES ($1, $2, $3)
                         ON CONFLICT (webhook_id) DO UPDATE SET circuit_opened_at = $3
                         WHERE h.circuit_opened_at IS NULL",
                        &[&webhook.id.0, &webhook.company_id.as_str(), &now],
                    )
                    .await?;
                (opened > 0).then(|| endpoint_health::circuit_opened(about(webhook), now))
            }
            Transition::Closed => {
                let row = tx
                    .query_opt(
                        "WITH open AS (
                            SELECT webhook_id, circuit_opened_at FROM webhook_health
                            WHERE webhook_id = $1 AND circuit_opened_at IS NOT NULL FOR UPDATE
                         )
                         UPDATE webhook_health h SET circuit_opened_at = NULL
                         FROM open WHERE h.webhook_id = open.webhook_id
                         RETURNING open.circuit_opened_at",
                        &[&webhook.id.0],
                    )
                    .await?;
                // Released even when another worker closed it first: this worker may have
                // parked more since.
                tx.execute(
                    "UPDATE deliveries SET parked_until = now()
                     WHERE webhook_id = $1 AND parked_until IS NOT NULL AND parked_until > now()",
                    &[&webhook.id.0],
                )
                .await?;
                match row {
                    Some(row) => Some(endpoint_health::circuit_closed(
                        about(webhook),
                        row.try_get(0)?,
                        now,
                    )),
                    None => None,
                }
            }
        };
        let changed = event.is_some();
        if let Some(event) = event {
            insert_event(&tx, &event).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Publishes the oldest waiting operational events, at most `limit`, in order, each with
    /// `publish` (true once the broker confirmed it), and deletes the ones published. Stops at
    /// the first that fails; it is tried again next time. Rows another worker is publishing are
    /// skipped. Returns how many were published.
    pub async fn drain_operational<F: Future<Output = bool>>(
        &self,
        limit: i64,
        mut publish: impl FnMut(OperationalEvent) -> F,
    ) -> Result<usize, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT id, event_type, body FROM operational_events
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&limit],
            )
            .await?;
        let mut published = Vec::with_capacity(rows.len());
        for row in &rows {
            let event_type: String = row.try_get(1)?;
            let event = OperationalEvent {
                id: row.try_get(0)?,
                event_type: endpoint_health::event_type(&event_type)
                    .ok_or_else(|| StorageError::Corrupt(format!("event type {event_type}")))?,
                body: row.try_get(2)?,
            };
            let id = event.id;
            if !publish(event).await {
                break;
            }
            published.push(id);
        }
        tx.execute(
            "DELETE FROM operational_events WHERE id = ANY($1)",
            &[&published],
        )
        .await?;
        tx.commit().await?;
        Ok(published.len())
    }
}
