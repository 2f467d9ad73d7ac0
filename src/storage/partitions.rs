//! The delivery log's time partitions (migration V16): events, deliveries and attempts each
//! have one partition per `retention.partition` of `event_at`, on the same bounds (attempts by
//! their delivery's id, whose UUID v7 time is its `event_at`). Partitions are created ahead of
//! need and retired whole once every row in them is past retention; what must stay (a delivery
//! still under way, a Failed one younger than `retention.failed_max_age`) is kept by copying it
//! into a fresh partition of the same bounds, which takes the old one's place.
//!
//! The decisions (which slot, which gap, what may go) are pure functions here; the SQL that
//! carries them out follows.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::{Client, GenericClient};

use super::{StorageError, compaction, retention::PruneCounts};
use crate::{config::RetentionConfig, domain::DeliveryId};

/// The partitioned tables.
pub(super) const TABLES: [&str; 3] = ["attempts", "events", "deliveries"];

/// The partitions created ahead: the one holding now and this many after it.
const AHEAD: u32 = 2;

/// How long creating or retiring a partition waits for a table's lock before it leaves the
/// work to the next round. The queries that come meanwhile wait behind it, so a busy table
/// costs them at most this much once.
const LOCK_TIMEOUT: &str = "1s";

/// Makes every statement of the maintenance connection `client` wait at most
/// [`LOCK_TIMEOUT`] for a lock (a concurrent detach's waits included).
pub async fn bound_lock_waits(client: &Client) -> Result<(), StorageError> {
    client
        .batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
        .await?;
    Ok(())
}

/// The range of `event_at` one partition holds: `from` inclusive (`None`: everything before
/// `to`, as the partition the tables of the unpartitioned layout became), `to` exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    pub from: Option<OffsetDateTime>,
    pub to: OffsetDateTime,
}

impl Bounds {
    fn contains(&self, at: OffsetDateTime) -> bool {
        self.from.is_none_or(|from| from <= at) && at < self.to
    }
}

/// The slot of the partition grid holding `at`: `partition`-long ranges from the Unix epoch.
pub fn slot(at: OffsetDateTime, partition: Duration) -> Bounds {
    let length = i128::try_from(partition.as_millis())
        .unwrap_or(i128::MAX)
        .max(1);
    let millis = at.unix_timestamp_nanos() / 1_000_000;
    let from_millis = millis.div_euclid(length) * length;
    let time =
        |millis: i128| OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000).unwrap_or(at);
    Bounds {
        from: Some(time(from_millis)),
        to: time(from_millis + length),
    }
}

/// The partition to create so that `at` has one: its grid slot, cut back to the partitions
/// already there (whose bounds may follow another grid, after `retention.partition` changed,
/// or the moment of the upgrade). `None` when a partition holds `at` already.
pub fn gap_for(at: OffsetDateTime, partition: Duration, existing: &[Bounds]) -> Option<Bounds> {
    if existing.iter().any(|b| b.contains(at)) {
        return None;
    }
    let mut gap = slot(at, partition);
    for bounds in existing {
        if bounds.to <= at {
            gap.from = gap.from.max(Some(bounds.to));
        }
        if let Some(from) = bounds.from.filter(|from| *from > at) {
            gap.to = gap.to.min(from);
        }
    }
    Some(gap)
}

/// What retiring a partition does with the rows still in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retirement {
    /// Failed deliveries in it are younger than `retention.failed_max_age`: they stay.
    pub keep_failed: bool,
}

/// Whether the partition `bounds` is past retention at `now`: every event filed in it is
/// older than `retention.max_age`.
pub fn retirement(
    bounds: &Bounds,
    config: &RetentionConfig,
    now: OffsetDateTime,
) -> Option<Retirement> {
    (bounds.to <= now - config.max_age).then(|| Retirement {
        keep_failed: bounds.to > now - config.failed_max_age,
    })
}

/// The name of a partition of `table` starting at `from`.
fn partition_name(table: &str, from: Option<OffsetDateTime>) -> String {
    match from {
        None => format!("{table}_legacy"),
        Some(from) => {
            let millis = from.millisecond();
            let mut name = format!(
                "{table}_p{:04}{:02}{:02}_{:02}{:02}{:02}",
                from.year(),
                u8::from(from.month()),
                from.day(),
                from.hour(),
                from.minute(),
                from.second()
            );
            if millis > 0 {
                name += &format!("_{millis:03}");
            }
            name
        }
    }
}

/// The partition's name in `table`, from its deliveries partition's name.
pub(super) fn sibling(deliveries_partition: &str, table: &str) -> String {
    let suffix = deliveries_partition
        .strip_prefix("deliveries_")
        .unwrap_or(deliveries_partition);
    format!("{table}_{suffix}")
}

/// A time as a SQL literal (UTC, to the microsecond).
fn literal(at: OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    format!(
        "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00'",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.microsecond()
    )
}

/// `FOR VALUES` of the partition `bounds` in `table`: attempts by delivery id, the others by
/// `event_at`.
pub(super) fn for_values(table: &str, bounds: &Bounds) -> String {
    let from = bounds
        .from
        .map_or_else(|| "MINVALUE".to_owned(), |at| bound(table, at));
    format!("FROM ({from}) TO ({})", bound(table, bounds.to))
}

/// A bound of `table`'s partitions as a SQL literal: attempts by delivery id, the others by
/// `event_at`.
fn bound(table: &str, at: OffsetDateTime) -> String {
    match table {
        "attempts" => format!("'{}'", DeliveryId::lowest_at(at)),
        _ => literal(at),
    }
}

/// A check that a row of `table` lies within `bounds`: what a table must hold to be attached
/// as their partition without reading it.
pub(super) fn bound_check(table: &str, bounds: &Bounds) -> String {
    let key = if table == "attempts" {
        "delivery_id"
    } else {
        "event_at"
    };
    let below = format!("{key} < {}", bound(table, bounds.to));
    match bounds.from {
        None => below,
        Some(from) => format!("{key} >= {} AND {below}", bound(table, from)),
    }
}

/// The partitions of `table` and their bounds as times, oldest first.
pub async fn existing(
    client: &impl GenericClient,
    table: &str,
) -> Result<Vec<(String, Bounds)>, StorageError> {
    // Attempts are bounded by delivery ids, whose times are the bounds.
    let as_time = |column: &str| {
        if table == "attempts" {
            format!("tesoro_log_time({column}::uuid)")
        } else {
            format!("{column}::timestamptz")
        }
    };
    let rows = client
        .query(
            &format!(
                "WITH bounds AS (
                    SELECT c.relname::text AS name,
                        (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                            'FROM \\(''([^'']*)''\\)'))[1] AS from_text,
                        (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                            'TO \\(''([^'']*)''\\)'))[1] AS to_text
                    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                    WHERE i.inhparent = $1::text::regclass
                 )
                 SELECT name, {}, {} AS to_time FROM bounds ORDER BY to_time",
                as_time("from_text"),
                as_time("to_text")
            ),
            &[&table],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let name: String = row.try_get(0)?;
            let to: Option<OffsetDateTime> = row.try_get(2)?;
            let to = to.ok_or_else(|| {
                StorageError::Corrupt(format!("partition {name} has no upper bound"))
            })?;
            Ok((
                name,
                Bounds {
                    from: row.try_get(1)?,
                    to,
                },
            ))
        })
        .collect()
}

/// Makes sure a partition of each table holds each of `times`; returns how many it created.
/// Each is created in a transaction of its own, which waits for its one table only, and for
/// at most [`LOCK_TIMEOUT`].
pub async fn ensure(
    client: &Client,
    partition: Duration,
    times: &[OffsetDateTime],
) -> Result<usize, StorageError> {
    let mut created = 0;
    for table in TABLES {
        let mut known: Vec<Bounds> = existing(client, table)
            .await?
            .into_iter()
            .map(|(_, bounds)| bounds)
            .collect();
        for &at in times {
            let Some(gap) = gap_for(at, partition, &known) else {
                continue;
            };
            // `CREATE TABLE .. PARTITION OF` would take the table's exclusive lock, waiting
            // for every query under way and holding every new one behind it; attaching a
            // table made apart takes a lock that lets them all run.
            let name = partition_name(table, gap.from);
            let create = format!(
                "CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                     INCLUDING STORAGE INCLUDING COMPRESSION);
                 ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES {}",
                for_values(table, &gap)
            );
            match in_transaction(client, &create).await {
                Ok(_) => created += 1,
                // Another worker created it, or one overlapping it, meanwhile: `at` has one.
                Err(StorageError::Db(e)) if lost_a_race(&e) => {}
                Err(StorageError::Db(e)) if is_busy(&e) => {
                    tracing::info!(
                        table,
                        "the table stayed busy; its next partition waits a round"
                    );
                    continue;
                }
                Err(e) => return Err(e),
            }
            known.push(gap);
        }
    }
    Ok(created)
}

/// Another worker created the partition, or one overlapping it, at the same moment.
fn lost_a_race(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        error.code(),
        Some(
            &SqlState::INVALID_OBJECT_DEFINITION
                | &SqlState::UNIQUE_VIOLATION
                | &SqlState::DUPLICATE_TABLE
        )
    )
}

/// The partition holding `now` and the [`AHEAD`] after it.
pub fn ahead(now: OffsetDateTime, partition: Duration) -> Vec<OffsetDateTime> {
    (0..=AHEAD).map(|n| now + partition * n).collect()
}

/// The rows of the deliveries partition `name` that retiring it keeps. Each branch is one
/// of the partial indexes on status (`deliveries_due_idx`, `deliveries_failed_idx`), so they
/// are found without reading the rows that go.
pub(super) fn kept(name: &str, retirement: Retirement) -> String {
    let failed = if retirement.keep_failed {
        format!(" UNION ALL SELECT * FROM {name} WHERE status = 'failed'")
    } else {
        String::new()
    };
    format!("SELECT * FROM {name} WHERE status IN ('pending', 'retrying'){failed}")
}

/// What retiring the partition `name` removes: its deliveries but the kept ones, their
/// attempts, and the events no kept delivery needs.
async fn doomed(
    client: &impl GenericClient,
    name: &str,
    retirement: Retirement,
) -> Result<PruneCounts, StorageError> {
    let (attempts, events) = (sibling(name, "attempts"), sibling(name, "events"));
    let kept = kept(name, retirement);
    let row = client
        .query_one(
            &format!(
                "WITH kept AS ({kept})
                 SELECT (SELECT count(*) FROM {name}) - (SELECT count(*) FROM kept),
                     (SELECT count(*) FROM {attempts} a
                      WHERE a.delivery_id NOT IN (SELECT id FROM kept)),
                     (SELECT count(*) FROM {events} e
                      WHERE (e.id, e.event_at) NOT IN (SELECT event_id, event_at FROM kept))"
            ),
            &[],
        )
        .await?;
    prune_counts(&row)
}

/// A row of three counts: deliveries, attempts, events.
fn prune_counts(row: &tokio_postgres::Row) -> Result<PruneCounts, StorageError> {
    let count = |i| -> Result<u64, StorageError> {
        Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0))
    };
    Ok(PruneCounts {
        deliveries: count(0)?,
        attempts: count(1)?,
        events: count(2)?,
    })
}

/// The rows of the partition `name` in the three tables, as PostgreSQL's statistics count
/// them once it has analyzed the partition (autovacuum keeps that within about a tenth),
/// else counted. Counting a day's partitions row by row would take longer than retiring them.
/// A partition a round cut short dropped already counts none.
async fn rows_in(client: &impl GenericClient, name: &str) -> Result<PruneCounts, StorageError> {
    let mut counts = PruneCounts::default();
    for table in TABLES {
        let partition = sibling(name, table);
        let row = client
            .query_one(
                "SELECT c.reltuples::int8 FROM (SELECT to_regclass($1::text) AS oid) r
                 LEFT JOIN pg_class c ON c.oid = r.oid",
                &[&partition],
            )
            .await?;
        let estimate: Option<i64> = row.try_get(0)?;
        let rows = match estimate {
            None => 0,
            Some(estimate) if estimate >= 0 => estimate,
            Some(_) => client
                .query_one(&format!("SELECT count(*) FROM {partition}"), &[])
                .await?
                .try_get(0)?,
        };
        *counts.of_table(table) = u64::try_from(rows).unwrap_or(0);
    }
    Ok(counts)
}

/// Whether retiring the deliveries partition `name` changes anything: it holds a delivery to
/// remove, or nothing to keep (an empty partition goes too). Once a partition's Failed
/// deliveries were kept, the next rounds find nothing to do there until they may go.
async fn has_doomed(
    client: &impl GenericClient,
    name: &str,
    retirement: Retirement,
) -> Result<bool, StorageError> {
    let row = client
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {name}
                        WHERE status = 'succeeded' OR (status = 'failed' AND NOT {}))
                    OR NOT EXISTS ({})",
                retirement.keep_failed,
                kept(name, retirement)
            ),
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Retires every partition past retention at `now` (or, with `dry_run`, counts what that
/// would remove).
pub async fn retire(
    client: &Client,
    config: &RetentionConfig,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<PruneCounts, StorageError> {
    let mut total = PruneCounts::default();
    if !dry_run && !finish_cut_short(client).await? {
        return Ok(total);
    }
    for (name, bounds) in existing(client, "deliveries").await? {
        let Some(retirement) = retirement(&bounds, config, now) else {
            continue;
        };
        if dry_run {
            total.add(doomed(client, &name, retirement).await?);
            continue;
        }
        match retire_one(client, &name, &bounds, retirement).await? {
            Some(counts) => total.add(counts),
            // A table stayed busy: the next round goes on from here.
            None => break,
        }
    }
    Ok(total)
}

/// Finishes what a round cut short left: detaches pending (a table holds one at a time, so
/// none other can start before it ends) and partitions replaced but not dropped. `false`
/// when a table stayed busy.
async fn finish_cut_short(client: &Client) -> Result<bool, StorageError> {
    let pending = client
        .query(
            "SELECT inhparent::regclass::text, inhrelid::regclass::text FROM pg_inherits
             WHERE inhdetachpending",
            &[],
        )
        .await?;
    for row in pending {
        let (table, partition): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        match drop_partition(client, &table, &partition).await {
            Ok(()) => {}
            Err(StorageError::Db(e)) if is_busy(&e) => {
                tracing::info!(partition = %partition, "the table stayed busy; retiring waits a round");
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    compaction::drop_replaced(client).await?;
    Ok(true)
}

/// Retires the partition `name` in the three tables: dropped whole when nothing in it
/// stays (`drop_partition`), else compacted to what stays (`compaction`); returns what went,
/// or `None` when a table stayed busy past the lock timeout. One table at a
/// time, so retiring never waits for one table while holding another (a query of several
/// tables could be waiting for that one: a deadlock). Attempts and events go first and keep
/// what the deliveries partition still needs, so a round cut short leaves the deliveries to
/// be found, and the whole finished, by the next one.
async fn retire_one(
    client: &Client,
    name: &str,
    bounds: &Bounds,
    retirement: Retirement,
) -> Result<Option<PruneCounts>, StorageError> {
    if !has_doomed(client, name, retirement).await? {
        return Ok(Some(PruneCounts::default()));
    }
    let keeps_any = client
        .query_one(&format!("SELECT EXISTS ({})", kept(name, retirement)), &[])
        .await?
        .try_get::<_, bool>(0)?;
    let stored = rows_in(client, name).await?;
    if keeps_any {
        let kept = compaction::compact(client, name, bounds, retirement).await?;
        return Ok(kept.map(|kept| stored.less(kept)));
    }
    compaction::drop_staged(client, name).await?;
    for table in TABLES {
        let partition = sibling(name, table);
        match drop_partition(client, table, &partition).await {
            Ok(()) => {}
            Err(StorageError::Db(e)) if is_busy(&e) => {
                tracing::info!(partition = %partition, "the table stayed busy; retiring waits a round");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(stored))
}

/// The lock timeout ran out.
pub(super) fn is_busy(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// Runs `statements` in a transaction of their own, waiting at most [`LOCK_TIMEOUT`] for a
/// lock; returns the first column of the last row they returned, if any.
pub(super) async fn in_transaction(
    client: &Client,
    statements: &str,
) -> Result<Option<String>, StorageError> {
    let result = client
        .simple_query(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; {statements}; COMMIT"
        ))
        .await;
    match result {
        Ok(messages) => Ok(messages
            .iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .last()),
        Err(e) => {
            // A failed statement leaves the transaction open, aborted.
            client.batch_execute("ROLLBACK").await?;
            Err(e.into())
        }
    }
}

/// Detaches and drops `partition` of `table` (gone already: nothing to do). Detached
/// concurrently: it waits for the queries that may see the partition and blocks none, so
/// retiring a partition with nothing to keep costs the log's readers and writers nothing. A
/// detach cut short (the worker stopped halfway) is finished.
async fn drop_partition(client: &Client, table: &str, partition: &str) -> Result<(), StorageError> {
    let row = client
        .query_opt(
            "SELECT inhdetachpending FROM pg_inherits
             WHERE inhparent = $1::text::regclass AND inhrelid = to_regclass($2::text)",
            &[&table, &partition],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    let how = if row.try_get::<_, bool>(0)? {
        "FINALIZE"
    } else {
        "CONCURRENTLY"
    };
    client
        .batch_execute(&format!(
            "ALTER TABLE {table} DETACH PARTITION {partition} {how}"
        ))
        .await?;
    client
        .batch_execute(&format!("DROP TABLE {partition}"))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn bounds(from: Option<OffsetDateTime>, to: OffsetDateTime) -> Bounds {
        Bounds { from, to }
    }

    #[test]
    fn slots_are_whole_partitions_from_the_epoch() {
        let at = datetime!(2026-12-07 10:11:12.5 UTC);
        assert_eq!(
            slot(at, DAY),
            bounds(
                Some(datetime!(2026-12-07 0:00 UTC)),
                datetime!(2026-12-08 0:00 UTC)
            )
        );
        assert_eq!(
            slot(at, Duration::from_secs(5)),
            bounds(
                Some(datetime!(2026-12-07 10:11:10 UTC)),
                datetime!(2026-12-07 10:11:15 UTC)
            )
        );
        let midnight = datetime!(2026-12-08 0:00 UTC);
        assert_eq!(
            slot(midnight, DAY).from,
            Some(midnight),
            "a bound starts its slot"
        );
    }

    #[test]
    fn a_gap_is_the_slot_cut_back_to_its_neighbours() {
        let legacy = bounds(None, datetime!(2026-12-07 03:56:00.414 UTC));
        let tomorrow = bounds(
            Some(datetime!(2026-12-08 0:00 UTC)),
            datetime!(2026-12-09 0:00 UTC),
        );
        let existing = [legacy.clone(), tomorrow];
        assert_eq!(
            gap_for(datetime!(2026-12-07 12:00 UTC), DAY, &existing),
            Some(bounds(Some(legacy.to), datetime!(2026-12-08 0:00 UTC)))
        );
        assert_eq!(
            gap_for(datetime!(2026-12-07 01:00 UTC), DAY, &existing),
            None
        );
        assert_eq!(
            gap_for(datetime!(2026-12-08 01:00 UTC), DAY, &existing),
            None
        );
        // Hourly partitions after daily ones: the hour after the last day.
        let hourly = Duration::from_secs(3600);
        assert_eq!(
            gap_for(datetime!(2026-12-09 0:30 UTC), hourly, &existing),
            Some(bounds(
                Some(datetime!(2026-12-09 0:00 UTC)),
                datetime!(2026-12-09 1:00 UTC)
            ))
        );
    }

    #[test]
    fn a_partition_retires_once_all_it_holds_is_past_retention() {
        let config = RetentionConfig {
            max_age: 30 * DAY,
            failed_max_age: 90 * DAY,
            interval: Duration::from_secs(600),
            partition: DAY,
        };
        let now = datetime!(2026-12-31 12:00 UTC);
        let day = |from: OffsetDateTime| bounds(Some(from), from + DAY);
        assert_eq!(
            retirement(&day(datetime!(2026-12-01 0:00 UTC)), &config, now),
            None
        );
        assert_eq!(
            retirement(&day(datetime!(2026-11-30 0:00 UTC)), &config, now),
            Some(Retirement { keep_failed: true })
        );
        assert_eq!(
            retirement(&day(datetime!(2026-10-01 0:00 UTC)), &config, now),
            Some(Retirement { keep_failed: false })
        );
        let legacy = bounds(None, datetime!(2026-11-01 0:00 UTC));
        assert_eq!(
            retirement(&legacy, &config, now),
            Some(Retirement { keep_failed: true })
        );
    }

    #[test]
    fn partitions_are_named_by_their_start() {
        assert_eq!(
            partition_name("deliveries", Some(datetime!(2026-12-07 0:00 UTC))),
            "deliveries_p20261207_000000"
        );
        assert_eq!(
            partition_name("events", Some(datetime!(2026-12-07 03:56:00.414 UTC))),
            "events_p20261207_035600_414"
        );
        assert_eq!(partition_name("attempts", None), "attempts_legacy");
        assert_eq!(
            sibling("deliveries_p20261207_000000", "attempts"),
            "attempts_p20261207_000000"
        );
        assert_eq!(sibling("deliveries_legacy", "events"), "events_legacy");
    }

    #[test]
    fn attempts_are_bounded_by_delivery_ids_of_the_same_times() {
        let day = bounds(
            Some(datetime!(2026-12-07 0:00 UTC)),
            datetime!(2026-12-08 0:00 UTC),
        );
        assert_eq!(
            for_values("deliveries", &day),
            "FROM ('2026-12-07 00:00:00.000000+00') TO ('2026-12-08 00:00:00.000000+00')"
        );
        let values = for_values("attempts", &day);
        assert_eq!(
            values,
            format!(
                "FROM ('{}') TO ('{}')",
                DeliveryId::lowest_at(datetime!(2026-12-07 0:00 UTC)),
                DeliveryId::lowest_at(datetime!(2026-12-08 0:00 UTC))
            )
        );
        let legacy = bounds(None, datetime!(2026-12-08 0:00 UTC));
        assert!(for_values("events", &legacy).starts_with("FROM (MINVALUE) TO ("));
    }
}
