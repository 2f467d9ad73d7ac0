//! Signing keys at rest and on the wire: sealed in the database under `security.secret_keys`,
//! rotated with an overlap in which both keys sign, and Ed25519 signing with a public key.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use tesoro_webhooks::{
    domain::{KeyRing, SigningKey, WebhookId},
    storage::Storage,
};
use testkit::signature::{verify, verify_ed25519};
use time::OffsetDateTime;

use crate::harness::{Received, TestDatabase, TestReceiver, TestWorker, test_config};

fn new_key_entry() -> String {
    KeyRing::generate_entry(OffsetDateTime::now_utc().date())
}

fn ring(entries: &[&String]) -> Arc<KeyRing> {
    let entries: Vec<String> = entries.iter().map(|e| (*e).clone()).collect();
    Arc::new(KeyRing::parse(&entries).expect("key ring"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `request`'s signature header verifies under the `whsec_` secret.
fn signed_with(request: &Received, secret: &str) -> bool {
    verify(
        secret,
        request.header("webhook-id"),
        request.header("webhook-timestamp"),
        &request.body,
        request.header("webhook-signature"),
    )
}

/// Every value of every column of every table of the worker's database, as text.
async fn every_stored_value(db: &tokio_postgres::Client) -> String {
    let tables = db
        .query(
            "SELECT quote_ident(table_name) FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .expect("tables");
    let mut everything = String::new();
    for table in tables {
        let table: String = table.get(0);
        let rows = db
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .await
            .expect("rows");
        for row in rows {
            everything.push_str(row.get::<_, &str>(0));
            everything.push('\n');
        }
    }
    everything
}

#[tokio::test]
async fn signing_keys_are_sealed_at_rest_and_still_sign() {
    let entry = new_key_entry();
    let mut config = test_config();
    config.security.secret_keys = ring(&[&entry]);
    let keys = config.security.secret_keys.clone();
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    worker
        .create_webhook_with(
            "cmp_sealed",
            &receiver.url(),
            &["deal.won"],
            json!({"secret": secret,
                   "headers": {"Authorization": "Bearer hdr-credential-4711"}}),
        )
        .await;
    let ed25519 = worker
        .create_webhook_with(
            "cmp_sealed",
            &receiver.url(),
            &["deal.won"],
            json!({"signature": "ed25519"}),
        )
        .await;

    worker
        .publish("deal.won", "cmp_sealed", json!({"id": "deal_1"}))
        .await;
    let requests = receiver.wait_for(2).await;
    assert!(
        requests.iter().any(|r| signed_with(r, secret)),
        "the sealed secret still signs"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.header("authorization") == "Bearer hdr-credential-4711"),
        "the sealed header is sent"
    );

    let ed25519_id = WebhookId::parse(ed25519["id"].as_str().expect("id")).expect("uuid");
    let sealed: String = worker
        .db
        .query_one(
            "SELECT signing_key FROM webhooks WHERE id = $1",
            &[&ed25519_id.0],
        )
        .await
        .expect("row")
        .get(0);
    let private_key = keys
        .open(&sealed, &ed25519_id.to_string())
        .expect("opens with the configured key");
    assert!(private_key.starts_with("whsk_"));

    let stored = every_stored_value(&worker.db).await;
    let hmac_key = STANDARD.decode(&secret["whsec_".len()..]).expect("base64");
    let (_, encryption_key) = entry.split_once(':').expect("id:key");
    let encryption_bytes = STANDARD.decode(encryption_key).expect("base64");
    for (what, clear) in [
        ("the secret", secret.to_owned()),
        ("the secret's key", secret["whsec_".len()..].to_owned()),
        ("the secret's key bytes", hex(&hmac_key)),
        ("the Ed25519 private key", private_key.to_string()),
        ("the Ed25519 seed", private_key["whsk_".len()..].to_owned()),
        ("the encryption key", encryption_key.to_owned()),
        ("the encryption key bytes", hex(&encryption_bytes)),
        // Sealed in the webhook, masked in the attempt log.
        (
            "a custom header's credential",
            "hdr-credential-4711".to_owned(),
        ),
    ] {
        assert!(!stored.contains(&clear), "{what} is stored in clear");
    }
    assert!(stored.contains("v1:k"), "sealed values are stored");
}

#[tokio::test]
async fn plain_secrets_are_sealed_at_start_and_keys_rotate() {
    let db = TestDatabase::create().await;
    let config = test_config();
    let database = tesoro_webhooks::config::DatabaseConfig {
        url: db.url.clone(),
        ..config.database.clone()
    };
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let id = WebhookId::new();
    // As a version before sealed keys stored it.
    db.db
        .execute(
            "INSERT INTO webhooks (id, company_id, name, url, events, secret, enabled)
             VALUES ($1, 'cmp_old', 'old', 'https://example.com/', '{deal.won}', $2, true)",
            &[&id.0, &secret],
        )
        .await
        .expect("insert");
    let (first, second, third) = (new_key_entry(), new_key_entry(), new_key_entry());
    let sealed_with = |prefix: &str| format!("v1:{}:", prefix.split_once(':').expect("id").0);

    let storage = Storage::connect(&database, ring(&[&first]))
        .await
        .expect("connects");
    let row = db
        .db
        .query_one(
            "SELECT secret, signing_key FROM webhooks WHERE id = $1",
            &[&id.0],
        )
        .await
        .expect("row");
    assert_eq!(
        row.get::<_, Option<String>>(0),
        None,
        "the plain column is emptied"
    );
    let sealed: String = row.get(1);
    assert!(sealed.starts_with(&sealed_with(&first)), "{sealed}");
    let headers = tesoro_webhooks::domain::CustomHeaders::new([(
        "authorization".to_owned(),
        "Bearer hdr-4711".to_owned(),
    )])
    .expect("valid");
    let changes = tesoro_webhooks::storage::WebhookChanges {
        headers: Some(headers.clone()),
        ..Default::default()
    };
    storage
        .update_webhook(id, changes)
        .await
        .expect("update")
        .expect("exists");
    let signing_key = |storage: Storage| async move {
        let webhook = storage.webhook(id).await.expect("read").expect("exists");
        storage.close();
        webhook.signing.expect("signed").key
    };
    let expected = SigningKey::parse(secret).expect("secret");
    assert_eq!(signing_key(storage).await, expected);

    // A new key in front: everything is sealed again under it, and the old one can go.
    let rotated = Storage::connect(&database, ring(&[&second, &first]))
        .await
        .expect("connects with both keys");
    rotated.close();
    let row = db
        .db
        .query_one(
            "SELECT signing_key, headers FROM webhooks WHERE id = $1",
            &[&id.0],
        )
        .await
        .expect("row");
    for sealed in [row.get::<_, String>(0), row.get(1)] {
        assert!(sealed.starts_with(&sealed_with(&second)), "{sealed}");
    }
    let storage = Storage::connect(&database, ring(&[&second]))
        .await
        .expect("the old key is no longer needed");
    let webhook = storage.webhook(id).await.expect("read").expect("exists");
    assert_eq!(webhook.headers, headers);
    assert_eq!(signing_key(storage).await, expected);

    // The right key id with other bytes is refused at start too, not at the first event.
    let second_id = second.split_once(':').expect("id").0;
    let impostor = format!("{second_id}:{}", STANDARD.encode([7u8; 32]));
    let error = Storage::connect(&database, ring(&[&impostor]))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("does not open") && error.contains("security.secret_keys"),
        "{error}"
    );

    // A key ring that lacks the sealing key is refused at start, naming the key.
    let error = Storage::connect(&database, ring(&[&third]))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains(second_id) && error.contains("security.secret_keys"),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1);
}

async fn rotate(worker: &TestWorker, id: &str, body: Option<Value>) -> (u16, Value) {
    worker
        .api("POST", &format!("/v1/webhooks/{id}/secret/rotate"), body)
        .await
}

#[tokio::test]
async fn a_rotation_signs_with_both_secrets_until_its_grace_ends() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let webhook = worker
        .create_webhook_with(
            "cmp_rot",
            &receiver.url(),
            &["deal.won"],
            json!({"secret": old}),
        )
        .await;
    let id = webhook["id"].as_str().expect("id").to_owned();

    let (status, rotated) = rotate(&worker, &id, Some(json!({"grace": "1h"}))).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"]
        .as_str()
        .expect("the new secret, once")
        .to_owned();
    assert_ne!(new, old);
    let ends_at = rotated["secret_rotation_ends_at"]
        .as_str()
        .expect("ends_at");
    let ends_at = OffsetDateTime::parse(ends_at, &time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    let grace = ends_at - OffsetDateTime::now_utc();
    assert!(
        grace > time::Duration::minutes(59) && grace <= time::Duration::hours(1),
        "{grace}"
    );
    let (_, shown) = worker.api("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(
        shown["secret_rotation_ends_at"],
        rotated["secret_rotation_ends_at"]
    );
    assert!(shown.get("secret").is_none(), "shown once: {shown}");

    worker.publish("deal.won", "cmp_rot", json!({})).await;
    let request = receiver.wait_for(1).await.remove(0);
    let header = request.header("webhook-signature");
    assert_eq!(header.split(' ').count(), 2, "{header}");
    assert!(header.starts_with("v1,"), "{header}");
    assert!(signed_with(&request, &new), "the new secret verifies");
    assert!(signed_with(&request, old), "the old secret verifies too");

    // No grace: the replaced secret stops signing at once.
    let (status, rotated) = rotate(&worker, &id, Some(json!({"grace": "0s"}))).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["secret_rotation_ends_at"], Value::Null);
    let newest = rotated["secret"].as_str().expect("secret").to_owned();
    worker.publish("deal.won", "cmp_rot", json!({})).await;
    let request = receiver.wait_for(2).await.remove(1);
    assert_eq!(request.header("webhook-signature").split(' ').count(), 1);
    assert!(signed_with(&request, &newest));
    assert!(!signed_with(&request, &new));

    for (body, field) in [
        (json!({"grace": "8d"}), "grace"),
        (json!({"grace": "soon"}), "grace"),
        (json!({"signature": "rsa"}), "signature"),
        (json!({"grace": "1h", "extra": 1}), "extra"),
    ] {
        let (status, error) = rotate(&worker, &id, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let unknown = WebhookId::new().to_string();
    assert_eq!(rotate(&worker, &unknown, None).await.0, 404);
}

#[tokio::test]
async fn ed25519_webhooks_sign_with_v1a_and_publish_their_public_key() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let created = worker
        .create_webhook_with(
            "cmp_ed",
            &receiver.url(),
            &["deal.won"],
            json!({"signature": "ed25519"}),
        )
        .await;
    assert_eq!(created["signature"], "ed25519");
    assert!(
        created.get("secret").is_none(),
        "no private key is shown: {created}"
    );
    let public_key = created["public_key"]
        .as_str()
        .expect("public key")
        .to_owned();
    assert!(public_key.starts_with("whpk_"));
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, published) = worker
        .api("GET", &format!("/v1/webhooks/{id}/public-key"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(published["public_key"], public_key.as_str());

    worker.publish("deal.won", "cmp_ed", json!({})).await;
    let request = receiver.wait_for(1).await.remove(0);
    let header = request.header("webhook-signature");
    assert!(header.starts_with("v1a,"), "{header}");
    let verifies = |key: &str, request: &Received| {
        verify_ed25519(
            key,
            request.header("webhook-id"),
            request.header("webhook-timestamp"),
            &request.body,
            request.header("webhook-signature"),
        )
    };
    assert!(verifies(&public_key, &request), "{header}");

    // Rotated with a grace, both key pairs sign, and both public keys are published.
    let (status, rotated) = rotate(&worker, &id, Some(json!({"grace": "10m"}))).await;
    assert_eq!(status, 200, "{rotated}");
    let new_key = rotated["public_key"]
        .as_str()
        .expect("new public key")
        .to_owned();
    let (_, published) = worker
        .api("GET", &format!("/v1/webhooks/{id}/public-key"), None)
        .await;
    assert_eq!(published["public_key"], new_key.as_str());
    assert_eq!(published["previous_public_key"], public_key.as_str());
    worker.publish("deal.won", "cmp_ed", json!({})).await;
    let request = receiver.wait_for(2).await.remove(1);
    assert!(verifies(&new_key, &request) && verifies(&public_key, &request));

    let (status, error) = worker
        .api(
            "POST",
            "/v1/webhooks",
            Some(
                json!({"company_id": "cmp_ed", "name": "ed", "url": receiver.url(),
                        "events": ["deal.won"], "signature": "ed25519", "generate_secret": true}),
            ),
        )
        .await;
    assert_eq!(
        (status, &error["error"]["field"]),
        (422, &json!("signature"))
    );
    let hmac = worker
        .create_webhook("cmp_ed", &receiver.url(), &["deal.won"])
        .await;
    let hmac_id = hmac["id"].as_str().expect("id");
    let (status, _) = worker
        .api("GET", &format!("/v1/webhooks/{hmac_id}/public-key"), None)
        .await;
    assert_eq!(status, 404, "an unsigned webhook has no public key");
}

#[tokio::test]
async fn keygen_prints_a_usable_key_and_a_missing_key_stops_the_worker() {
    let binary = env!("CARGO_BIN_EXE_tesoro-webhooks");
    let output = std::process::Command::new(binary)
        .arg("keygen")
        .output()
        .expect("keygen");
    assert!(output.status.success());
    let entry = String::from_utf8(output.stdout).expect("utf-8");
    KeyRing::parse(&[entry.trim().to_owned()]).expect("the printed entry is a valid key");

    let output = std::process::Command::new(binary)
        .arg("migrate")
        .env("TESORO_WEBHOOKS__SECURITY__SECRET_KEYS", "[]")
        .output()
        .expect("migrate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("security.secret_keys") && stderr.contains("keygen"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// A RabbitMQ user of the test's own, with a password to look for; deleted on drop.
struct BrokerUser {
    name: String,
}

impl BrokerUser {
    fn create(name: &str, password: &str) -> Self {
        let ctl = |args: &[&str]| {
            let status = std::process::Command::new("rabbitmqctl")
                .args(args)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("rabbitmqctl");
            assert!(status.success(), "rabbitmqctl {args:?}");
        };
        ctl(&["add_user", name, password]);
        let user = Self {
            name: name.to_owned(),
        };
        ctl(&["set_permissions", "-p", "/", name, ".*", ".*", ".*"]);
        user
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn no_secret_token_or_password_reaches_the_output() {
    let suffix = format!("{:08x}", rand::random::<u32>());
    let amqp_password = format!("amqp-pw-{suffix}");
    let database_password = format!("pg-pw-{suffix}");
    // Dropped after the worker, which cleans up with this user.
    let _user = BrokerUser::create(&format!("tw_test_{suffix}"), &amqp_password);
    let mut config = test_config();
    config.amqp.url = format!("amqp://tw_test_{suffix}:{amqp_password}@127.0.0.1:5672/%2f");
    // The server trusts local connections, so any password is accepted and never checked.
    config.database.url = config
        .database
        .url
        .replace("postgres@", &format!("postgres:{database_password}@"));
    let key_entry = new_key_entry();
    let keys_env = format!("[\"{key_entry}\"]");
    let mut worker = TestWorker::start_process_with_env(
        config,
        &[
            ("TESORO_WEBHOOKS__SECURITY__SECRET_KEYS", &keys_env),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let receiver = TestReceiver::start().await;
    let failing = TestReceiver::start().await;
    failing.set_default(crate::harness::Reply::Status(500));
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    for (url, company) in [(receiver.url(), "cmp_out"), (failing.url(), "cmp_out")] {
        let (status, body) = worker
            .api(
                "POST",
                "/v1/webhooks",
                Some(json!({"company_id": company, "name": "x", "url": url,
                            "events": ["deal.won"], "secret": secret})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, rotated) = worker
        .api("GET", "/v1/webhooks?company_id=cmp_out", None)
        .await;
    let id = rotated["data"][0]["id"].as_str().expect("id").to_owned();
    let (_, rotated) = worker
        .api("POST", &format!("/v1/webhooks/{id}/secret/rotate"), None)
        .await;
    let new_secret = rotated["secret"].as_str().expect("secret").to_owned();
    let (_, token) = worker
        .api("POST", "/v1/companies/cmp_out/tokens", Some(json!({})))
        .await;
    let company_token = token["token"].as_str().expect("token").to_owned();

    // Successes, failures that retry and end Failed, a bad token, a quarantined message.
    let (event_id, _) = worker.publish("deal.won", "cmp_out", json!({})).await;
    let webhook_ids: Vec<String> = rotated_ids(&worker).await;
    for webhook_id in &webhook_ids {
        let status = if *webhook_id == id {
            "succeeded"
        } else {
            "failed"
        };
        worker.wait_for_status(&event_id, webhook_id, status).await;
    }
    let response = worker
        .http
        .get(worker.url("/v1/webhooks"))
        .bearer_auth(format!("{company_token}x"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    worker.publish_raw("deal.won", b"not json").await;
    let queue = worker.broker.topology().quarantine_queue.clone();
    wait_until_one_quarantined(&worker, &queue).await;
    let listed = worker.cli(&["quarantine", "list"]).await;
    assert!(listed.success, "{}", listed.stderr);
    let metrics = worker.metrics().await;
    let migrate = |amqp: String, database: String| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tesoro-webhooks"))
            .arg("migrate")
            .env("TESORO_WEBHOOKS__AMQP__URL", amqp)
            .env("TESORO_WEBHOOKS__DATABASE__URL", database)
            .output()
            .expect("migrate");
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };
    let bad_config = migrate(
        format!("amqp://tw:{amqp_password}@127.0.0.1:notaport/%2f"),
        format!("postgres://postgres:{database_password}@127.0.0.1/tw"),
    );
    let bad_database_url = migrate(
        "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        format!("postgres://postgres:{database_password}@127.0.0.1:notaport/tw"),
    );
    let unreachable_database = migrate(
        "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        format!("postgres://postgres:{database_password}@127.0.0.1:1/tw"),
    );
    let unreachable_broker = migrate(
        format!("amqp://tw:{amqp_password}@127.0.0.1:1/%2f"),
        worker.config.database.url.clone(),
    );
    let (_, log) = worker.terminate_process().await;

    let output = [
        log,
        listed.stdout,
        listed.stderr,
        metrics,
        bad_config,
        bad_database_url,
        unreachable_database,
        unreachable_broker,
    ]
    .join("\n");
    assert!(output.contains("delivery"), "the output was captured");
    let (_, encryption_key) = key_entry.split_once(':').expect("id:key");
    for (what, secret) in [
        ("the broker password", amqp_password.as_str()),
        ("the database password", database_password.as_str()),
        ("the admin token", crate::harness::TOKEN),
        ("the company token", company_token.as_str()),
        ("the webhook secret", &secret["whsec_".len()..]),
        ("the rotated secret", &new_secret["whsec_".len()..]),
        ("the encryption key", encryption_key),
    ] {
        assert!(!output.contains(secret), "{what} appears in the output");
    }
}

async fn rotated_ids(worker: &TestWorker) -> Vec<String> {
    let (_, listed) = worker
        .api("GET", "/v1/webhooks?company_id=cmp_out", None)
        .await;
    listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|w| w["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn wait_until_one_quarantined(worker: &TestWorker, queue: &str) {
    crate::harness::wait_until("the message in quarantine", || async {
        (worker.broker.depth(queue).await.ok()? >= 1).then_some(())
    })
    .await;
}
