//! `bench --preload N`: a delivery log as a user's looks after a while, written before the run.
//!
//! `N` deliveries of 1,000 companies' 5,000 webhooks (none of them the run's), spread evenly
//! over 90 % of `retention.max_age` up to a minute ago, so the run neither prunes them nor
//! reads them as fresh: one in [`FAILED_EVERY`] Failed after five attempts, the rest succeeded
//! at their first, each with its event. Written set-based (`INSERT ... SELECT` over
//! `generate_series`), in chunks, in ascending time as a worker writes them; the rows look like
//! the worker's own (UUID v7 ids of their event's time, filed in the partitions of that time,
//! the headers it sends, a 1 KiB event of CRM-like JSON whose free text is random).

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::Client;

use tesoro_webhooks::{
    config::RetentionConfig,
    domain::{CompanyId, WebhookId},
    storage::{self, Storage},
};

pub const COMPANIES: u32 = 1_000;
pub const WEBHOOKS: u32 = 5_000;
/// One delivery in this many is Failed (3 %).
pub const FAILED_EVERY: u64 = 33;
/// Deliveries written per statement: each chunk is one transaction of three statements.
const CHUNK: u64 = 250_000;
/// The preloaded webhooks subscribe to this type, which the run never publishes.
const PRELOADED_TYPE: &str = "deal.updated";

/// What the preload wrote, and where the dashboard's reads during the run look.
#[derive(Debug, Clone)]
pub struct Preloaded {
    pub deliveries: u64,
    pub seconds: f64,
    /// Database size growth over the preload, divided by its deliveries.
    pub bytes_per_delivery: f64,
    /// Every preloaded webhook with its company.
    pub webhooks: Vec<(WebhookId, CompanyId)>,
}

/// Opens a connection of the bench's own to the run's database.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = storage::database_target(url)?
        .open()
        .await
        .context("connect to the bench's database")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("bench: database connection: {e}");
        }
    });
    Ok(client)
}

/// The database's size in bytes, tables, indexes and TOAST included.
pub async fn database_bytes(client: &Client) -> anyhow::Result<u64> {
    let row = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Writes the webhooks and `deliveries` deliveries, then analyzes the tables so the run's
/// queries are planned for their size.
pub async fn preload(
    client: &mut Client,
    storage: &Storage,
    deliveries: u64,
    retention: &RetentionConfig,
) -> anyhow::Result<Preloaded> {
    let started = Instant::now();
    let bytes_before = database_bytes(client).await?;
    let webhooks = insert_webhooks(client).await?;
    // Oldest a tenth of the retention inside the window, newest a minute ago.
    let span = (retention.max_age * 9 / 10).saturating_sub(Duration::from_secs(60));
    let now = time::OffsetDateTime::now_utc();
    let mut times = vec![now];
    while let Some(&last) = times.last().filter(|&&t| t > now - span) {
        times.push(last - retention.partition);
    }
    storage
        .create_partitions_for(retention.partition, &times)
        .await?;
    let span_ms = i64::try_from(span.as_millis())?;
    let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000)?;
    let total = i64::try_from(deliveries)?;
    let statements = [insert_events(), insert_deliveries(), insert_attempts()];
    let mut first = 1;
    while first <= total {
        let last = (first + i64::try_from(CHUNK)? - 1).min(total);
        let tx = client.transaction().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&first, &last, &total, &now_ms, &span_ms];
        for statement in &statements {
            tx.execute(statement.as_str(), &params).await?;
        }
        tx.commit().await?;
        eprintln!(
            "bench: preloaded {last} of {total} deliveries ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
        first = last + 1;
    }
    client
        .batch_execute("ANALYZE webhooks, events, deliveries, attempts")
        .await?;
    let bytes_after = database_bytes(client).await?;
    Ok(Preloaded {
        deliveries,
        seconds: started.elapsed().as_secs_f64(),
        bytes_per_delivery: bytes_after.saturating_sub(bytes_before) as f64
            / deliveries.max(1) as f64,
        webhooks,
    })
}

/// 5,000 webhooks, five per company, none with a secret (no key to seal or open).
async fn insert_webhooks(client: &Client) -> anyhow::Result<Vec<(WebhookId, CompanyId)>> {
    let rows = client
        .query(
            &format!(
                "INSERT INTO webhooks (id, company_id, name, url, events)
                 SELECT {WEBHOOK_ID}, {},  'preloaded ' || w,
                     'https://hooks.preload.invalid/' || w, ARRAY['{PRELOADED_TYPE}']
                 FROM generate_series(0, $1 - 1) AS w
                 RETURNING id, company_id",
                company_id()
            ),
            &[&i32::try_from(WEBHOOKS)?],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let company = CompanyId::parse(row.get::<_, String>(1))
                .map_err(|e| anyhow::anyhow!("preloaded company id: {e}"))?;
            Ok((WebhookId(row.get(0)), company))
        })
        .collect()
}

/// Webhook `w`'s id.
const WEBHOOK_ID: &str = "md5('preloaded webhook ' || w)::uuid";

/// Webhook `w`'s company.
fn company_id() -> String {
    format!("'cmp_preload_' || (w % {COMPANIES})")
}

/// Rows `g` of `$1..=$2` (of `$3`) with their webhook `w`, their time `ms` since the epoch
/// (`$4` less their share of the span `$5`), and whether they failed.
fn delivery_rows() -> String {
    format!(
        "SELECT g, g % {WEBHOOKS} AS w, $4::int8 - $5::int8 * ($3::int8 - g) / $3::int8 AS ms,
            g % {FAILED_EVERY} = 0 AS failed
         FROM generate_series($1::int8, $2::int8) AS g"
    )
}

/// A UUID v7 for `ms`, its random bits from `g`: ordered as the worker's delivery ids are.
const DELIVERY_ID: &str = "(lpad(to_hex(ms), 12, '0') || '7' || substr(md5(g::text), 1, 3)
    || '8' || substr(md5(g::text), 4, 15))::uuid";

/// A CRM-like envelope of about 1 KiB: fixed keys, varying values, and 384 characters of
/// random free text (which no compression shrinks much).
const EVENT_BODY: &str = r#"convert_to(format('{"id":"evt_preload_%s","event":"deal.updated","timestamp":"%s","company_id":"cmp_preload_%s","data":{"id":"deal_%s","name":"Deal %s for account %s","amount":%s,"currency":"EUR","stage":"negotiation","pipeline":"default","owner":{"id":"usr_%s","name":"Owner %s","email":"owner%s@customer.example"},"contact":{"id":"con_%s","first_name":"Contact","last_name":"%s","email":"contact%s@customer.example"},"custom_fields":{"source":"web","notes":"%s"}},"previous_data":{"stage":"qualified"}}',
    g, to_char(to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    w % 1000, g, g, w % 1000, g % 100000, g % 50, g % 50, g % 50, g % 20000, g % 20000,
    g % 20000,
    encode(sha512(int8send(g)), 'hex') || encode(sha512(int8send(-g)), 'hex')
        || encode(sha512(int8send(g + 1)), 'hex')), 'UTF8')"#;

/// The headers the worker sends, signature included, as the attempt log keeps them.
const REQUEST_HEADERS: &str = r#"format('[["webhook-id","evt_preload_%s"],["webhook-timestamp","%s"],["webhook-signature","v1,%s"],["x-tesoro-event","deal.updated"],["x-tesoro-attempt","%s"],["content-type","application/json"],["user-agent","tesoro-webhooks/0.1.0"]]',
    g, ms / 1000, encode(sha256(int8send(g * 1000 + n)), 'base64'), n)::json"#;

fn insert_events() -> String {
    let (rows, company) = (delivery_rows(), company_id());
    format!(
        "INSERT INTO events (id, company_id, event_type, body, received_at, event_at)
         SELECT 'evt_preload_' || g, {company}, '{PRELOADED_TYPE}', {EVENT_BODY},
             to_timestamp(ms / 1000.0), to_timestamp(ms / 1000.0)
         FROM ({rows}) AS r"
    )
}

fn insert_deliveries() -> String {
    let (rows, company) = (delivery_rows(), company_id());
    format!(
        "INSERT INTO deliveries (id, event_id, webhook_id, company_id, event_type, status,
            attempt_count, last_status, last_error, created_at, updated_at, event_at)
         SELECT {DELIVERY_ID}, 'evt_preload_' || g, {WEBHOOK_ID}, {company},
             '{PRELOADED_TYPE}', CASE WHEN failed THEN 'failed' ELSE 'succeeded' END,
             CASE WHEN failed THEN 5 ELSE 1 END, CASE WHEN failed THEN 500 ELSE 200 END,
             CASE WHEN failed THEN 'http_status: 500 Internal Server Error' END,
             to_timestamp(ms / 1000.0), to_timestamp(ms / 1000.0), to_timestamp(ms / 1000.0)
         FROM ({rows}) AS r"
    )
}

/// One attempt per succeeded delivery, five per Failed one.
fn insert_attempts() -> String {
    let rows = delivery_rows();
    format!(
        "INSERT INTO attempts (delivery_id, webhook_id, attempt_number, trigger, attempted_at,
            duration_ms, request_headers, response_status, response_headers, response_body)
         SELECT {DELIVERY_ID}, {WEBHOOK_ID}, n, 'automatic', to_timestamp(ms / 1000.0),
             3 + g % 40, {REQUEST_HEADERS}, CASE WHEN failed THEN 500 ELSE 200 END,
             '[[\"content-type\",\"text/plain\"],[\"content-length\",\"2\"]]'::json,
             convert_to(CASE WHEN failed THEN 'internal error' ELSE 'ok' END, 'UTF8')
         FROM ({rows}) AS r,
             generate_series(1, CASE WHEN failed THEN 5 ELSE 1 END) AS n"
    )
}
