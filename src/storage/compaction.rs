//! Retiring a partition that must keep some of its rows (Failed deliveries younger than
//! `retention.failed_max_age`, deliveries still under way, with their attempts and events):
//! a fresh partition of the same bounds, holding only those, takes its place.
//!
//! The kept rows are copied before any lock is taken ([`stage`]): from one snapshot, into a
//! table beside each partition, with the partition's indexes and a check of its bounds (so
//! attaching it reads nothing). Then each table in turn ([`swap`]), under its exclusive lock,
//! gets what changed since, the old partition is detached and the staged table attached in
//! its place. What changed is found from the deliveries that differ from their staged copy:
//! whatever adds or removes a kept delivery's attempts or event changes its delivery in the
//! same transaction. So the lock lasts as long as the changes take, not the copy. A round
//! cut short leaves the staged tables, and the next round finishes from them.

use tokio_postgres::Client;

use super::{
    StorageError,
    partitions::{Bounds, Retirement, bound_check, for_values, in_transaction, kept, sibling},
    retention::PruneCounts,
};

/// The suffix of the table a partition's kept rows are staged in.
const STAGED: &str = "_staged";

/// The suffix of a partition that a fresh one replaced, until it is dropped.
pub(super) const REPLACED: &str = "_replaced";

/// Planner settings for reading a partition's kept rows: they are a few percent of it,
/// found by index (the partial indexes on status, the keys); a scan of the whole partition
/// would take as long as the partition is large.
const BY_INDEX: &str = "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off;
    SET LOCAL enable_mergejoin = off;";

/// Replaces the partition `name` (of deliveries, and its siblings in attempts and events) by
/// one holding only what `retirement` keeps; returns how many rows of each table it kept, or
/// `None` when a table stayed busy past the lock timeout (the next round goes on).
pub(super) async fn compact(
    client: &Client,
    name: &str,
    bounds: &Bounds,
    retirement: Retirement,
) -> Result<Option<PruneCounts>, StorageError> {
    if !exists(client, &staged(name)).await? {
        stage(client, name, bounds, retirement).await?;
    }
    let mut kept_rows = PruneCounts::default();
    for table in super::partitions::TABLES {
        let partition = sibling(name, table);
        // Swapped in a round cut short.
        if !exists(client, &staged(&partition)).await? {
            continue;
        }
        match swap(client, table, name, bounds, retirement).await {
            Ok(rows) => *kept_rows.of_table(table) = rows,
            Err(StorageError::Db(e)) if super::partitions::is_busy(&e) => {
                tracing::info!(partition = %partition, "the table stayed busy; retiring waits a round");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(kept_rows))
}

fn staged(partition: &str) -> String {
    format!("{partition}{STAGED}")
}

/// The rows of `table`'s partition that retiring the deliveries partition `name` keeps.
fn kept_in(table: &str, name: &str, retirement: Retirement) -> String {
    let kept = kept(name, retirement);
    let partition = sibling(name, table);
    match table {
        "attempts" => {
            format!("SELECT * FROM {partition} WHERE delivery_id IN (SELECT id FROM ({kept}) k)")
        }
        "events" => format!(
            "SELECT * FROM {partition}
             WHERE (id, event_at) IN (SELECT event_id, event_at FROM ({kept}) k)"
        ),
        _ => kept,
    }
}

/// Copies what the partition `name` keeps, in the three tables, into staged tables made
/// like the partitions, from one snapshot and without a lock that holds anyone. Autovacuum
/// leaves them alone until they are in place: swapping one would wait for it to give way
/// (a second, `deadlock_timeout`), which is as long as a swap may wait for its lock.
async fn stage(
    client: &Client,
    name: &str,
    bounds: &Bounds,
    retirement: Retirement,
) -> Result<(), StorageError> {
    let mut statements = format!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; {BY_INDEX}");
    for table in super::partitions::TABLES {
        let partition = sibling(name, table);
        let staged = staged(&partition);
        statements += &format!(
            "DROP TABLE IF EXISTS {staged};
             CREATE TABLE {staged} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                 INCLUDING STORAGE INCLUDING COMPRESSION INCLUDING INDEXES)
                 WITH (autovacuum_enabled = false);
             INSERT INTO {staged} {};
             ALTER TABLE {staged} ADD CONSTRAINT {partition}_bounds CHECK ({});",
            kept_in(table, name, retirement),
            bound_check(table, bounds)
        );
    }
    in_transaction(client, &statements).await?;
    Ok(())
}

/// Under `table`'s exclusive lock: brings its staged table up to date with what changed
/// since it was staged, and puts it in place of its partition; returns the rows it holds.
/// The old partition's files are dropped once the lock is gone.
async fn swap(
    client: &Client,
    table: &str,
    name: &str,
    bounds: &Bounds,
    retirement: Retirement,
) -> Result<u64, StorageError> {
    let partition = sibling(name, table);
    let (staged, replaced) = (staged(&partition), format!("{partition}{REPLACED}"));
    let rows = in_transaction(
        client,
        &format!(
            "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;
             {};
             {};
             ALTER TABLE {table} DETACH PARTITION {partition};
             ALTER TABLE {partition} RENAME TO {replaced};
             ALTER TABLE {staged} RENAME TO {partition};
             ALTER TABLE {table} ATTACH PARTITION {partition} FOR VALUES {};
             ALTER TABLE {partition} RESET (autovacuum_enabled);
             SELECT count(*)::text FROM {partition}",
            changed_deliveries(name, retirement),
            catch_up(table, name),
            for_values(table, bounds)
        ),
    )
    .await?;
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {replaced}"))
        .await?;
    Ok(rows.and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// Temporary tables of the deliveries of the partition `name` that changed since they were
/// staged: `fresh`, the kept rows its staged table lacks (changed or newly kept), as they
/// are now; `stale`, the staged rows it no longer holds (changed or no longer kept).
fn changed_deliveries(name: &str, retirement: Retirement) -> String {
    let staged_deliveries = staged(name);
    // Analyzed, so that the statements after them are planned for how few they are.
    format!(
        "SET LOCAL enable_seqscan = off;
         CREATE TEMP TABLE now_kept ON COMMIT DROP AS {};
         SET LOCAL enable_seqscan = on;
         ANALYZE now_kept;
         CREATE TEMP TABLE fresh ON COMMIT DROP AS
             SELECT k.* FROM now_kept k LEFT JOIN {staged_deliveries} s
                 ON s.id = k.id AND s.event_at = k.event_at
             WHERE s IS DISTINCT FROM k;
         CREATE TEMP TABLE stale ON COMMIT DROP AS
             SELECT s.* FROM {staged_deliveries} s LEFT JOIN now_kept k
                 ON k.id = s.id AND k.event_at = s.event_at
             WHERE k IS DISTINCT FROM s;
         ANALYZE fresh, stale",
        kept(name, retirement)
    )
}

/// Brings the staged table of `table`'s partition up to date with the `fresh` and `stale`
/// deliveries: their rows, their attempts (whatever adds one changes its delivery) and the
/// events they need.
fn catch_up(table: &str, name: &str) -> String {
    let partition = sibling(name, table);
    let staged = staged(&partition);
    match table {
        "attempts" => format!(
            "DELETE FROM {staged}
                 WHERE delivery_id IN (SELECT id FROM stale UNION SELECT id FROM fresh);
             INSERT INTO {staged} SELECT * FROM {partition}
                 WHERE delivery_id IN (SELECT id FROM fresh)"
        ),
        "events" => format!(
            "DELETE FROM {staged} e
                 WHERE (e.id, e.event_at) IN (SELECT event_id, event_at FROM stale)
                     AND NOT EXISTS (SELECT 1 FROM now_kept k
                         WHERE k.event_id = e.id AND k.event_at = e.event_at);
             INSERT INTO {staged} SELECT * FROM {partition} e
                 WHERE (e.id, e.event_at) IN (SELECT event_id, event_at FROM fresh)
                     AND NOT EXISTS (SELECT 1 FROM {staged} s
                         WHERE s.id = e.id AND s.event_at = e.event_at)"
        ),
        _ => format!(
            "DELETE FROM {staged} WHERE id IN (SELECT id FROM stale);
             INSERT INTO {staged} SELECT * FROM fresh"
        ),
    }
}

/// Whether the table `name` exists.
async fn exists(client: &Client, name: &str) -> Result<bool, StorageError> {
    let row = client
        .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&name])
        .await?;
    Ok(row.try_get(0)?)
}

/// Drops the partitions that fresh ones replaced and that a round cut short left behind.
pub(super) async fn drop_replaced(client: &Client) -> Result<(), StorageError> {
    let rows = client
        .query(
            &format!(
                "SELECT c.relname::text FROM pg_class c
                 WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
                     AND NOT c.relispartition
                     AND c.relname ~ '^(attempts|events|deliveries)_(p[0-9_]+|legacy){REPLACED}$'"
            ),
            &[],
        )
        .await?;
    for row in rows {
        let name: String = row.try_get(0)?;
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
            .await?;
    }
    Ok(())
}

/// Drops what staging the partition `name` left, when it is retired whole after all.
pub(super) async fn drop_staged(client: &Client, name: &str) -> Result<(), StorageError> {
    let tables: Vec<String> = super::partitions::TABLES
        .iter()
        .map(|table| staged(&sibling(name, table)))
        .collect();
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {}", tables.join(", ")))
        .await?;
    Ok(())
}
