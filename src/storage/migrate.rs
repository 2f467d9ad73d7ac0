//! Database creation and versioned migrations (`migrations/V*.sql`, embedded at build time).

use tokio_postgres::{Client, error::SqlState};

use super::StorageError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Serialises concurrent migrators (two workers starting at once) on one advisory lock.
const MIGRATION_LOCK: i64 = 0x7e50_0001;

/// Opens a connection of its own to `url`.
pub(super) async fn connect(url: &str) -> Result<Client, StorageError> {
    connect_to(super::tls::target(url)?).await
}

/// Opens a connection of its own to `target`.
async fn connect_to(target: super::tls::DatabaseTarget) -> Result<Client, StorageError> {
    let (client, connection) = target.open().await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "migration connection closed");
        }
    });
    Ok(client)
}

/// The name of the database in `url`, and a connection target for the `postgres`
/// maintenance database of the same server(s) instead.
fn split_database(url: &str) -> Result<(String, super::tls::DatabaseTarget), StorageError> {
    let mut target = super::tls::target(url)?;
    let name = target
        .config
        .get_dbname()
        .ok_or_else(|| StorageError::Url("no database name in database.url".into()))?
        .to_owned();
    target.config.dbname("postgres");
    Ok((name, target))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the database named in `url` when it does not exist. Racing creators are fine.
pub async fn ensure_database(url: &str) -> Result<(), StorageError> {
    let (name, admin) = split_database(url)?;
    let admin = connect_to(admin).await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if exists {
        return Ok(());
    }
    match admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
        .await
    {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        // Two creators at once can also collide on the template's catalog row.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Drops the database named in `url`, closing its connections. For tests and benchmarks.
pub async fn drop_database(url: &str) -> Result<(), StorageError> {
    let (name, admin) = split_database(url)?;
    let admin = connect_to(admin).await?;
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&name)
        ))
        .await?;
    Ok(())
}

/// Applies pending migrations under an advisory lock, so concurrent starts are safe.
pub async fn migrate(url: &str) -> Result<(), StorageError> {
    run_migrations(url, refinery::Target::Latest).await
}

/// Applies the migrations up to `version` only: a database of an earlier layout, as an
/// upgrade finds it (the upgrade tests build one).
pub async fn migrate_to(url: &str, version: i32) -> Result<(), StorageError> {
    run_migrations(url, refinery::Target::Version(version)).await
}

async fn run_migrations(url: &str, target: refinery::Target) -> Result<(), StorageError> {
    let mut client = connect(url).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = embedded::migrations::runner()
        .set_target(target)
        .run_async(&mut client)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = result?;
    for migration in report.applied_migrations() {
        tracing::info!(migration = %migration, "applied migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_target_keeps_credentials_and_hosts() {
        let (name, admin) =
            split_database("postgres://postgres@127.0.0.1:5432,127.0.0.1:5433/tesoro_webhooks")
                .expect("valid");
        assert_eq!(name, "tesoro_webhooks");
        assert_eq!(admin.config.get_dbname(), Some("postgres"));
        assert_eq!(admin.config.get_user(), Some("postgres"));
        assert_eq!(admin.config.get_ports(), [5432, 5433]);
        assert!(split_database("postgres://postgres@127.0.0.1:5432").is_err());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
