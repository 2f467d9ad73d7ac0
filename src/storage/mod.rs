//! PostgreSQL: the one module that speaks tokio-postgres. Webhooks (subscriptions), events,
//! deliveries and the attempt log.

mod batch;
mod changes;
mod compaction;
mod deliveries;
mod endpoint_health;
mod events_queues;
mod gauges;
mod log;
mod migrate;
mod parking;
mod partitions;
mod recorder;
mod retention;
mod tls;
mod tokens;
mod webhooks;
mod workers;

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::{config::DatabaseConfig, domain::KeyRing};

pub use batch::{DeliveryWrite, EventRow};
pub use changes::{ChangeListener, listen_for_changes};
pub use deliveries::{
    AttemptRecord, JobTarget, PreparedDelivery, ReplayScope, RetryTarget, Window,
};
pub use gauges::DatabaseGauges;
pub use log::{AttemptView, DeliveryFilter, DeliveryView, HealthView};
pub use migrate::{drop_database, ensure_database, migrate, migrate_to};
pub use parking::ParkedDelivery;
pub use recorder::{RecordError, Recorder};
pub use retention::{PruneCounts, Pruner};
pub use tls::{DatabaseTarget, target as database_target};
pub use tokens::ApiToken;
pub use webhooks::{NewWebhook, Webhook, WebhookChanges};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {}", describe_db_error(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("migrations: {0}")]
    Migration(#[from] refinery::Error),
    #[error("invalid database url: {0}")]
    Url(String),
    #[error(
        "the database did not complete the connection within {0:?} (connect_timeout in database.url)"
    )]
    ConnectTimeout(std::time::Duration),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A sealed signing key that does not open: its key is missing from
    /// `security.secret_keys`, or the value was altered.
    #[error("{0}")]
    Sealed(String),
    /// One failure that several callers awaited together (a shared load).
    #[error(transparent)]
    Shared(std::sync::Arc<StorageError>),
}

impl StorageError {
    /// Whether the database itself failed (unreachable, restarting, out of resources, a pool
    /// timeout), as opposed to refusing what it was given (a value, a constraint): the first
    /// passes by itself, the second fails again on every try.
    pub fn is_outage(&self) -> bool {
        match self {
            StorageError::Db(e) => match e.as_db_error() {
                // No server error: the connection broke, or could not be made.
                None => true,
                // Connection exceptions, insufficient resources, operator intervention
                // (shutdown, cannot connect now), system errors; a server that is (or
                // became) a standby refuses writes until a primary takes over.
                Some(db) => {
                    ["08", "53", "57", "58"]
                        .iter()
                        .any(|class| db.code().code().starts_with(class))
                        || *db.code() == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION
                }
            },
            StorageError::Pool(_) | StorageError::ConnectTimeout(_) => true,
            StorageError::Shared(e) => e.is_outage(),
            StorageError::Migration(_)
            | StorageError::Url(_)
            | StorageError::Corrupt(_)
            | StorageError::Sealed(_) => false,
        }
    }
}

/// The condition that finds the delivery with id `id` (a SQL expression) in its partition
/// only: a delivery id's time is its `event_at`, and the rows of the unpartitioned layout are
/// filed under the Unix epoch (migration V16). `d` is the deliveries table's alias.
fn filed_by_id(d: &str, id: &str) -> String {
    format!("{d}.event_at IN (tesoro_log_time({id}), 'epoch')")
}

/// Delivery ids as the `uuid[]` a statement takes.
fn delivery_uuids(ids: &[crate::domain::DeliveryId]) -> Vec<uuid::Uuid> {
    ids.iter().map(|id| id.0).collect()
}

/// tokio-postgres prints a server error as just "db error"; the server's message says which.
fn describe_db_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// How a pool's connections plan prepared statements.
#[derive(Debug, Clone, Copy)]
enum PlanCache {
    /// PostgreSQL's default: custom plans while they look cheaper. Right for the API's
    /// optional filters (`$1 IS NULL OR ...`), which only a custom plan can use an index for.
    Adaptive,
    /// Plan once per connection. The recorder's batch statement (unnest of 27 arrays, three
    /// tables) otherwise got a custom plan on nearly every execution, planning it anew each
    /// time (docs/performance.md).
    Generic,
}

/// Where a pool connects, with the session settings its plans need.
fn pool_target(url: &str, plans: PlanCache) -> Result<tls::DatabaseTarget, StorageError> {
    let mut target = tls::target(url)?;
    if let PlanCache::Generic = plans {
        target.set("plan_cache_mode", "force_generic_plan");
    }
    Ok(target)
}

/// The database handle the rest of the worker uses.
#[derive(Clone)]
pub struct Storage {
    pool: Pool,
    /// Seals webhook signing keys as they are written, opens them as they are read.
    keys: Arc<KeyRing>,
    /// `database.url`: partitions are created on a connection of their own.
    url: String,
    /// `retention.partition`: the length of a partition the log's writes create when they
    /// find none for a row.
    log_partition: std::time::Duration,
}

impl Storage {
    /// Creates the database if missing, applies migrations, opens the pool, checks that the
    /// key ring opens the stored signing keys, and seals every one under its first key (see
    /// `reseal_signing_keys`): what `run` and `migrate` do at start.
    pub async fn connect(
        config: &DatabaseConfig,
        keys: Arc<KeyRing>,
    ) -> Result<Self, StorageError> {
        ensure_database(&config.url).await?;
        migrate(&config.url).await?;
        let storage = Self::open(config, keys)?;
        storage.verify_signing_keys().await?;
        storage.seal_under_first_key().await?;
        Ok(storage)
    }

    /// `reseal_signing_keys`, logging what it changed.
    pub async fn seal_under_first_key(&self) -> Result<(), StorageError> {
        let resealed = self.reseal_signing_keys().await?;
        if resealed > 0 {
            tracing::info!(
                webhooks = resealed,
                key = self.keys.sealing_key_id(),
                "sealed webhook signing keys under the first key of security.secret_keys"
            );
        }
        Ok(())
    }

    /// The same handle, creating partitions of `partition` when a write finds none.
    pub fn with_log_partition(mut self, partition: std::time::Duration) -> Self {
        self.log_partition = partition;
        self
    }

    /// Opens the pool without touching the schema.
    pub fn open(config: &DatabaseConfig, keys: Arc<KeyRing>) -> Result<Self, StorageError> {
        Self::open_pool(config, config.pool_size, PlanCache::Adaptive, keys)
    }

    /// Ends the pooled connections that are idle (the rest end when returned), so a database
    /// dropped next does not terminate them mid-session (which each reports as an error).
    pub fn close(&self) {
        self.pool.close();
    }

    /// A pool of `connections` for the recorder's batch statement alone, planned once per
    /// connection.
    fn open_for_batches(
        &self,
        config: &DatabaseConfig,
        connections: usize,
    ) -> Result<Self, StorageError> {
        let storage = Self::open_pool(config, connections, PlanCache::Generic, self.keys.clone())?;
        Ok(storage.with_log_partition(self.log_partition))
    }

    fn open_pool(
        config: &DatabaseConfig,
        connections: usize,
        plans: PlanCache,
        keys: Arc<KeyRing>,
    ) -> Result<Self, StorageError> {
        let tls::DatabaseTarget { config: pg, tls } = pool_target(&config.url, plans)?;
        // Verified recycling: after a database restart, Fast would hand out dead connections.
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(connections)
            .runtime(Runtime::Tokio1)
            // Without these a `get()` waits forever when the database is down.
            .wait_timeout(Some(config.pool_timeout))
            .create_timeout(Some(config.pool_timeout))
            .recycle_timeout(Some(config.pool_timeout))
            .build()
            .map_err(|e| StorageError::Url(e.to_string()))?;
        Ok(Self {
            pool,
            keys,
            url: config.url.clone(),
            log_partition: crate::config::DEFAULT_PARTITION,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        Ok(self.pool.get().await?)
    }

    /// Whether a pooled connection is encrypted, as the server reports it (`pg_stat_ssl`).
    pub async fn connection_is_encrypted(&self) -> Result<bool, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// True when a pooled connection answers a trivial query: the readiness check.
    pub async fn ping(&self) -> bool {
        match self.client().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(plans: PlanCache, url: &str) -> Option<String> {
        let target = pool_target(url, plans).expect("target");
        target.config.get_options().map(str::to_owned)
    }

    #[test]
    fn only_the_batch_pool_forces_generic_plans() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(options(PlanCache::Adaptive, url), None);
        assert_eq!(
            options(PlanCache::Generic, url).as_deref(),
            Some("-c plan_cache_mode=force_generic_plan")
        );
    }

    #[test]
    fn the_urls_own_settings_are_kept_beside_the_plan_setting() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres?options=-c%20search_path%3Dlog";
        assert_eq!(
            options(PlanCache::Generic, url).as_deref(),
            Some("-c search_path=log -c plan_cache_mode=force_generic_plan")
        );
    }
}
