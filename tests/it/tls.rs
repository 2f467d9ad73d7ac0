//! PostgreSQL over TLS, as `database.url`'s sslmode asks, against the machine's server (which
//! Debian sets up with `ssl = on` and its snakeoil certificate, issued to `localhost`).

use std::time::Duration;

use serde_json::json;
use tesoro_webhooks::{config::DatabaseConfig, storage::Storage};

use crate::harness::{TestReceiver, TestWorker, test_config};

const SERVER_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// Whether the pool's connection is encrypted, as the server sees it.
async fn encrypted(url: &str) -> Result<bool, String> {
    let database = DatabaseConfig {
        url: url.to_owned(),
        pool_size: 1,
        pool_timeout: Duration::from_secs(5),
    };
    let storage =
        Storage::open(&database, test_config().security.secret_keys).map_err(|e| e.to_string())?;
    let encrypted = storage
        .connection_is_encrypted()
        .await
        .map_err(|e| chain(&e));
    storage.close();
    encrypted
}

/// An error and its causes, as the worker prints them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn sslmode_decides_encryption_and_what_is_checked() {
    let db = "postgres://postgres@{host}:5432/postgres";
    let url = |host: &str, query: &str| format!("{}?{query}", db.replace("{host}", host));
    assert_eq!(
        encrypted(&db.replace("{host}", "127.0.0.1")).await,
        Ok(false),
        "plain by default"
    );
    assert_eq!(
        encrypted(&url("127.0.0.1", "sslmode=require")).await,
        Ok(true)
    );
    let full = format!("sslmode=verify-full&sslrootcert={SERVER_CERT}");
    assert_eq!(
        encrypted(&url("localhost", &full)).await,
        Ok(true),
        "the certificate names localhost"
    );
    let wrong_name = encrypted(&url("127.0.0.1", &full)).await;
    assert!(
        wrong_name
            .as_ref()
            .is_err_and(|e| e.contains("certificate")),
        "verify-full checks the name: {wrong_name:?}"
    );
    let ca = format!("sslmode=verify-ca&sslrootcert={SERVER_CERT}");
    assert_eq!(
        encrypted(&url("127.0.0.1", &ca)).await,
        Ok(true),
        "verify-ca checks the chain only"
    );
    // A bundle of public CAs, none of which issued the server's certificate.
    let other_ca = "sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca-certificates.crt";
    let untrusted = encrypted(&url("localhost", other_ca)).await;
    assert!(
        untrusted.as_ref().is_err_and(|e| e.contains("certificate")),
        "an unknown issuer is refused: {untrusted:?}"
    );
}

/// The whole worker (migrations, pool, recorder, LISTEN) over TLS.
#[tokio::test]
async fn the_worker_runs_on_an_encrypted_database_connection() {
    let mut config = test_config();
    config.database.url.push_str("?sslmode=require");
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_tls", &receiver.url(), &["deal.won"])
        .await;
    let (event_id, _) = worker.publish("deal.won", "cmp_tls", json!({})).await;
    worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
    let plain: i64 = worker
        .db
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = current_database() AND NOT s.ssl",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert_eq!(
        plain, 0,
        "every connection to the worker's database is encrypted"
    );
}
