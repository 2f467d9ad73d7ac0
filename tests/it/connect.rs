//! Bounded connects: a broker node or a database that accepts connections and never answers
//! them (a broker out of file handles) costs a command its connect timeout, then the next
//! node is tried or the command ends with its error; nothing hangs.

use std::time::{Duration, Instant};

use crate::harness::{TestReceiver, TestWorker};

/// A listener on 127.0.0.1 that never accepts: the kernel completes connections into its
/// backlog and nobody reads what they send, as with a wedged broker. Its address.
fn silent_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    (listener, address)
}

/// How long a command may take here: its connect timeout and some.
const ENDS_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_broker_node_that_never_answers_is_passed_over_for_the_next() {
    let (_silent, address) = silent_listener();
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    worker
        .create_webhook("cmp_next_node", &receiver.url(), &["deal.won"])
        .await;
    let mut config = worker.config.clone();
    config.amqp.url = format!("amqp://guest:guest@{address}/%2f,{}", config.amqp.url);
    config.amqp.connect_timeout = Duration::from_millis(500);

    let started = Instant::now();
    let published = tokio::time::timeout(
        ENDS_WITHIN,
        worker.cli_as(
            &config,
            &[
                "publish",
                "--event",
                "deal.won",
                "--company",
                "cmp_next_node",
                "--data",
                "{}",
            ],
        ),
    )
    .await
    .expect("publish ends");
    assert!(published.success, "{published:?}");
    assert!(started.elapsed() < ENDS_WITHIN);
    receiver.wait_for(1).await;
}

#[tokio::test]
async fn commands_end_with_their_error_when_no_broker_node_answers() {
    let (_silent, address) = silent_listener();
    let worker = TestWorker::start().await;
    let mut config = worker.config.clone();
    config.amqp.url = format!("amqp://guest:secret@{address}/%2f");
    config.amqp.connect_timeout = Duration::from_millis(500);

    let publish = [
        "publish",
        "--event",
        "deal.won",
        "--company",
        "cmp_none",
        "--data",
        "{}",
    ];
    for args in [&publish[..], &["migrate"]] {
        let ended = tokio::time::timeout(ENDS_WITHIN, worker.cli_as(&config, args))
            .await
            .unwrap_or_else(|_| panic!("{args:?} ends"));
        assert!(!ended.success, "{args:?}: {ended:?}");
        let error = format!(
            "error: broker node amqp://guest:***@{address}/%2f did not complete the connection \
             within 500ms (amqp.connect_timeout)"
        );
        assert!(
            ended.stderr.lines().any(|line| line == error),
            "{args:?}: {}",
            ended.stderr
        );
    }
}

#[tokio::test]
async fn migrate_ends_with_its_error_when_the_database_never_answers() {
    let (_silent, address) = silent_listener();
    let worker = TestWorker::start().await;
    let mut config = worker.config.clone();
    config.database.url = format!("postgres://postgres@{address}/tw_never?connect_timeout=1");

    let ended = tokio::time::timeout(ENDS_WITHIN, worker.cli_as(&config, &["migrate"]))
        .await
        .expect("migrate ends");
    assert!(!ended.success, "{ended:?}");
    assert!(
        ended.stderr.lines().any(|line| line
            == "error: the database did not complete the connection within 1s \
                (connect_timeout in database.url)"),
        "{}",
        ended.stderr
    );
}

#[tokio::test]
async fn a_write_refused_by_a_read_only_server_is_an_outage() {
    // What a standby (or a primary being demoted) answers: the write waits for a primary,
    // it is not the delivery's fault.
    let worker = TestWorker::start().await;
    let db = crate::harness::connect_db(&worker.config.database.url).await;
    db.batch_execute("SET default_transaction_read_only = on")
        .await
        .expect("read only");
    let refused = db
        .batch_execute("CREATE TABLE refused_here (id int)")
        .await
        .expect_err("a read-only session refuses writes");
    let error = tesoro_webhooks::storage::StorageError::from(refused);
    assert!(error.is_outage(), "{error}");
}
