//! The tests' side of PostgreSQL: their own connections, and a fresh migrated database with
//! no worker.

use tesoro_webhooks::storage;

use super::*;

/// A connection of the test's own to the database at `url`, with the TLS its sslmode asks
/// for, as the worker connects.
pub async fn connect_db(url: &str) -> tokio_postgres::Client {
    let target = storage::database_target(url).expect("database url");
    let (client, connection) = target
        .config
        .connect(target.tls)
        .await
        .expect("test db connection");
    tokio::spawn(connection);
    client
}

/// A fresh, migrated database and no worker: for storage-level tests. Dropped on drop.
pub struct TestDatabase {
    pub storage: storage::Storage,
    pub db: tokio_postgres::Client,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let config = test_config();
        let storage = storage::Storage::connect(&config.database, config.security.secret_keys)
            .await
            .expect("database created");
        storage
            .create_partitions_ahead(config.retention.partition)
            .await
            .expect("partitions");
        let db = connect_db(&config.database.url).await;
        Self {
            storage,
            db,
            url: config.database.url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let url = self.url.clone();
        clean_up(async move {
            let _ = storage::drop_database(&url).await;
        });
    }
}
