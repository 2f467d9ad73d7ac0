//! Retention: the log's partitions are created ahead and retired whole; old succeeded
//! deliveries go with their attempts, Failed ones by their own longer age, an event with its
//! last delivery; pending work and newer rows stay. One worker prunes at a time.

use std::time::{Duration, Instant};

use serde_json::json;
use tesoro_webhooks::{config::RetentionConfig, retry::RetrySchedule, storage::Pruner};

use crate::harness::{Reply, TestReceiver, TestWorker, test_config, wait_until};

/// (deliveries, attempts) of `event_id`, and whether its event row is kept.
async fn kept(worker: &TestWorker, event_id: &str) -> (i64, i64, bool) {
    let row = worker
        .db
        .query_one(
            "SELECT (SELECT count(*) FROM deliveries WHERE event_id = $1),
                (SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
                 WHERE d.event_id = $1),
                EXISTS (SELECT 1 FROM events WHERE id = $1)",
            &[&event_id],
        )
        .await
        .expect("query");
    (row.get(0), row.get(1), row.get(2))
}

async fn sleep_until(instant: Instant) {
    tokio::time::sleep_until(instant.into()).await;
}

#[tokio::test]
async fn old_deliveries_go_failed_ones_by_their_own_age_and_newer_ones_stay() {
    let mut config = test_config();
    config.retention = RetentionConfig {
        max_age: Duration::from_secs(5),
        failed_max_age: Duration::from_secs(8),
        // The test prunes by hand.
        interval: Duration::from_secs(3600),
        partition: Duration::from_secs(1),
    };
    let worker = TestWorker::start_with(config).await;
    let ends = worker.healthy_and_failing("cmp_ret", 500).await;
    let started = Instant::now();
    let (old, _) = worker.publish("deal.won", "cmp_ret", json!({})).await;
    worker.wait_for_status(&old, &ends.ok, "succeeded").await;
    worker.wait_for_status(&old, &ends.bad, "failed").await;
    assert_eq!(kept(&worker, &old).await, (2, 6, true));

    // Its partition ends within a second of the publish: all of it is 5 s old a second later.
    sleep_until(started + Duration::from_millis(6300)).await;
    let (new, _) = worker.publish("deal.won", "cmp_ret", json!({})).await;
    worker.wait_for_status(&new, &ends.ok, "succeeded").await;
    let dry = worker.cli(&["prune", "--dry-run"]).await;
    assert!(dry.success, "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains("would remove 1 deliveries (1 attempts, 0 events)"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        kept(&worker, &old).await,
        (2, 6, true),
        "a dry run changes nothing"
    );

    let pruned = worker.cli(&["prune"]).await;
    assert!(pruned.success, "{}", pruned.stderr);
    assert!(
        pruned
            .stdout
            .contains("removed 1 deliveries (1 attempts, 0 events)"),
        "{}",
        pruned.stdout
    );
    // The Failed delivery is younger than its own limit; its event stays with it.
    assert_eq!(kept(&worker, &old).await, (1, 5, true));
    // New rows stay (the failing delivery's retries go on meanwhile).
    let (deliveries, attempts, event) = kept(&worker, &new).await;
    assert_eq!((deliveries, event), (2, true), "new rows stay");
    assert!(attempts >= 2, "{attempts}");

    sleep_until(started + Duration::from_millis(9300)).await;
    let pruned = worker.cli(&["prune"]).await;
    assert!(
        pruned
            .stdout
            .contains("removed 1 deliveries (5 attempts, 1 events)"),
        "{}",
        pruned.stdout
    );
    assert_eq!(kept(&worker, &old).await, (0, 0, false));
    assert!(
        kept(&worker, &new).await.0 >= 1,
        "the new event's deliveries stay"
    );
}

#[tokio::test]
async fn the_workers_prune_on_their_own_one_at_a_time() {
    let mut config = test_config();
    config.retention = RetentionConfig {
        max_age: Duration::from_secs(1),
        failed_max_age: Duration::from_secs(1),
        interval: Duration::from_millis(300),
        partition: Duration::from_secs(1),
    };
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_auto", &receiver.url(), &["deal.won"])
        .await;

    // While another process holds the pruning lock, nobody else prunes.
    let holder = Pruner::lock(&worker.config.database.url)
        .await
        .expect("connect")
        .expect("the lock is free");
    let (event, _) = worker.publish("deal.won", "cmp_auto", json!({})).await;
    worker
        .wait_for_status(&event, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
    let busy = worker.cli(&["prune"]).await;
    assert!(
        busy.stdout.contains("another worker is pruning now"),
        "{}",
        busy.stdout
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        kept(&worker, &event).await.0,
        1,
        "kept while the lock is held"
    );

    drop(holder);
    wait_until("the worker to prune the delivery", || async {
        (kept(&worker, &event).await == (0, 0, false)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_webhook_takes_the_events_only_it_needed() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let only = worker
        .create_webhook("cmp_del", &receiver.url(), &["deal.won"])
        .await;
    let shared = worker
        .create_webhook("cmp_del", &receiver.url(), &["deal.lost"])
        .await;
    let also_shared = worker
        .create_webhook("cmp_del", &receiver.url(), &["deal.lost"])
        .await;
    let (alone, _) = worker.publish("deal.won", "cmp_del", json!({})).await;
    let (together, _) = worker.publish("deal.lost", "cmp_del", json!({})).await;
    for (event, webhook) in [
        (&alone, &only),
        (&together, &shared),
        (&together, &also_shared),
    ] {
        worker
            .wait_for_status(event, webhook["id"].as_str().expect("id"), "succeeded")
            .await;
    }
    for webhook in [&only, &shared] {
        let id = webhook["id"].as_str().expect("id");
        let (status, _) = worker
            .api("DELETE", &format!("/v1/webhooks/{id}"), None)
            .await;
        assert_eq!(status, 204);
    }
    assert_eq!(
        kept(&worker, &alone).await,
        (0, 0, false),
        "its last delivery went"
    );
    assert_eq!(
        kept(&worker, &together).await,
        (1, 1, true),
        "another webhook's delivery still needs it"
    );
}

/// The deliveries partitions, oldest first: (name, lower bound, upper bound) as text.
async fn partitions(worker: &TestWorker) -> Vec<(String, Option<time::OffsetDateTime>)> {
    worker
        .db
        .query(
            "SELECT c.relname::text,
                (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']*)''\\)'))[1]::timestamptz
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'deliveries'::regclass ORDER BY 2 NULLS FIRST",
            &[],
        )
        .await
        .expect("partitions")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The partition that holds the delivery of `event_id` to `webhook_id`.
async fn partition_of(worker: &TestWorker, event_id: &str, webhook_id: &str) -> String {
    let webhook = uuid::Uuid::parse_str(webhook_id).expect("uuid");
    worker
        .db
        .query_one(
            "SELECT tableoid::regclass::text FROM deliveries WHERE event_id = $1 AND webhook_id = $2",
            &[&event_id, &webhook],
        )
        .await
        .expect("delivery")
        .get(0)
}

fn seconds_partitions(max_age: u64, failed_max_age: u64) -> RetentionConfig {
    RetentionConfig {
        max_age: Duration::from_secs(max_age),
        failed_max_age: Duration::from_secs(failed_max_age),
        // The tests prune by hand.
        interval: Duration::from_secs(3600),
        partition: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn partitions_are_created_ahead_and_dropped_whole_after_retention() {
    let mut config = test_config();
    config.retention = seconds_partitions(2, 2);
    let before = time::OffsetDateTime::now_utc();
    let worker = TestWorker::start_with(config).await;
    let ahead: Vec<_> = partitions(&worker).await;
    // The layout before partitions became the first one; then the one under way and the two
    // after it.
    assert_eq!(
        ahead.first().map(|p| p.0.as_str()),
        Some("deliveries_legacy"),
        "{ahead:?}"
    );
    let starts: Vec<_> = ahead.iter().filter_map(|p| p.1).collect();
    assert!(
        starts
            .iter()
            .any(|s| *s >= before + time::Duration::seconds(1)),
        "{ahead:?}"
    );

    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_parts", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let (event, _) = worker.publish("deal.won", "cmp_parts", json!({})).await;
    worker
        .wait_for_status(&event, webhook_id, "succeeded")
        .await;
    let holder = partition_of(&worker, &event, webhook_id).await;
    assert!(holder.starts_with("deliveries_p"), "{holder}");

    // Past its retention (2 s after its end, a second at most after the publish).
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let pruned = worker.cli(&["prune"]).await;
    assert!(pruned.success, "{}", pruned.stderr);
    assert!(
        pruned
            .stdout
            .contains("removed 1 deliveries (1 attempts, 1 events)"),
        "{}",
        pruned.stdout
    );
    let left = partitions(&worker).await;
    assert!(
        !left.iter().any(|p| p.0 == holder),
        "{holder} dropped: {left:?}"
    );
    assert!(!left.iter().any(|p| p.0 == "deliveries_legacy"), "{left:?}");
    assert_eq!(kept(&worker, &event).await, (0, 0, false));
    // The partitions ahead of now are there for the next events.
    let now = time::OffsetDateTime::now_utc();
    assert!(
        left.iter().any(|p| p.1.is_some_and(|s| s > now)),
        "{left:?}"
    );
}

#[tokio::test]
async fn a_retired_partition_keeps_its_work_under_way_and_its_young_failures() {
    let mut config = test_config();
    config.retention = seconds_partitions(1, 4);
    config.delivery.retry_schedule =
        RetrySchedule::new(vec![Duration::from_millis(200)]).expect("valid schedule");
    let worker = TestWorker::start_with(config).await;
    let ends = worker.healthy_and_failing("cmp_keep", 500).await;
    let started = Instant::now();
    let (done, _) = worker.publish("deal.won", "cmp_keep", json!({})).await;
    worker.wait_for_status(&done, &ends.ok, "succeeded").await;
    worker.wait_for_status(&done, &ends.bad, "failed").await;
    let (under_way, _) = worker.publish("deal.won", "cmp_keep", json!({})).await;
    worker
        .wait_for_status(&under_way, &ends.ok, "succeeded")
        .await;
    worker
        .wait_for_status(&under_way, &ends.bad, "failed")
        .await;
    // As if its last retry were still waiting in a tier.
    worker
        .db
        .execute(
            "UPDATE deliveries SET status = 'retrying' WHERE event_id = $1 AND webhook_id = $2",
            &[&under_way, &uuid::Uuid::parse_str(&ends.bad).expect("uuid")],
        )
        .await
        .expect("update");
    let held_in = partition_of(&worker, &done, &ends.bad).await;

    // What a round cut short between replacing a partition and dropping the old one leaves.
    worker
        .db
        .batch_execute("CREATE TABLE events_p20200101_000000_replaced (id text)")
        .await
        .expect("a leftover");

    sleep_until(started + Duration::from_millis(2500)).await;
    let pruned = worker.cli(&["prune"]).await;
    assert!(pruned.success, "{}", pruned.stderr);
    assert!(
        pruned
            .stdout
            .contains("removed 2 deliveries (2 attempts, 0 events)"),
        "{}",
        pruned.stdout
    );
    let replaced: Vec<String> = worker
        .db
        .query(
            "SELECT relname::text FROM pg_class WHERE relname LIKE '%\\_replaced'",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        replaced.is_empty(),
        "replaced partitions are dropped: {replaced:?}"
    );
    assert_eq!(
        kept(&worker, &done).await,
        (1, 2, true),
        "the young Failed one stays"
    );
    assert_eq!(
        kept(&worker, &under_way).await,
        (1, 2, true),
        "the retrying one stays"
    );
    assert_eq!(
        partition_of(&worker, &done, &ends.bad).await,
        held_in,
        "in its own partition"
    );
    // What stayed is the delivery as it was: a retry by hand reaches it.
    ends.failing.set_default(Reply::Status(200));
    let failed_id: String = worker
        .db
        .query_one(
            "SELECT id::text FROM deliveries WHERE event_id = $1 AND webhook_id = $2",
            &[&done, &uuid::Uuid::parse_str(&ends.bad).expect("uuid")],
        )
        .await
        .expect("delivery")
        .get(0);
    let (status, body) = worker
        .api("POST", &format!("/v1/deliveries/{failed_id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    worker.wait_for_status(&done, &ends.bad, "succeeded").await;

    let again = worker.cli(&["prune"]).await;
    assert!(
        again
            .stdout
            .contains("removed 1 deliveries (3 attempts, 1 events)"),
        "the retried one has succeeded, and goes with the event none other needs: {}",
        again.stdout
    );
    assert_eq!(
        kept(&worker, &under_way).await,
        (1, 2, true),
        "still under way"
    );
}

#[tokio::test]
async fn the_same_event_published_again_after_a_boundary_is_one_delivery() {
    let mut config = test_config();
    config.retention = seconds_partitions(3600, 3600);
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_dup", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let (event, body) = worker.publish("deal.won", "cmp_dup", json!({})).await;
    worker
        .wait_for_status(&event, webhook_id, "succeeded")
        .await;
    let first = partition_of(&worker, &event, webhook_id).await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    worker
        .publisher()
        .publish_event("deal.won", &event, &body)
        .await
        .expect("publish again");
    receiver.wait_for(2).await;
    wait_until("the second attempt to be logged", || async {
        (worker.attempts(&event).await.len() == 2).then_some(())
    })
    .await;
    let rows = worker
        .db
        .query(
            "SELECT attempt_count FROM deliveries WHERE event_id = $1",
            &[&event],
        )
        .await
        .expect("deliveries");
    assert_eq!(rows.len(), 1, "one delivery");
    assert_eq!(
        rows[0].get::<_, i32>(0),
        2,
        "the second publish's attempt is its next"
    );
    assert_eq!(partition_of(&worker, &event, webhook_id).await, first);
}

#[tokio::test]
async fn a_retry_finds_its_delivery_in_an_older_partition() {
    let mut config = test_config();
    config.retention = seconds_partitions(3600, 3600);
    config.delivery.retry_schedule =
        RetrySchedule::new(vec![Duration::from_millis(1500)]).expect("valid schedule");
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::Status(500)]);
    let webhook = worker
        .create_webhook("cmp_older", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let (event, _) = worker.publish("deal.won", "cmp_older", json!({})).await;
    let attempts = worker
        .wait_for_status(&event, webhook_id, "succeeded")
        .await;
    assert_eq!(attempts, 2);
    let holder = partition_of(&worker, &event, webhook_id).await;
    let rows = worker.attempts(&event).await;
    assert_eq!(rows.len(), 2, "both attempts on the one delivery");
    let current = partitions(&worker)
        .await
        .into_iter()
        .rfind(|p| p.1.is_some_and(|s| s <= time::OffsetDateTime::now_utc()))
        .expect("a partition holds now")
        .0;
    assert_ne!(holder, current, "the retry came after the partition's end");
}

#[tokio::test]
async fn an_event_filed_where_no_partition_is_gets_one() {
    let mut config = test_config();
    config.retention = seconds_partitions(1, 1);
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_past", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    // The partition the upgrade left (everything before the migration) retires, so nothing
    // holds the past.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let pruned = worker.cli(&["prune"]).await;
    assert!(pruned.success, "{}", pruned.stderr);
    assert!(
        !partitions(&worker)
            .await
            .iter()
            .any(|p| p.0 == "deliveries_legacy"),
        "{}",
        pruned.stdout
    );

    // Stamped ten minutes ago: filed then.
    let stamped = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let body = json!({
        "id": "evt_past", "event": "deal.won", "company_id": "cmp_past", "data": {},
        "timestamp": tesoro_webhooks::envelope::rfc3339(stamped),
    });
    worker
        .publish_raw("deal.won", body.to_string().as_bytes())
        .await;
    worker
        .wait_for_status("evt_past", webhook_id, "succeeded")
        .await;
    let holder = partition_of(&worker, "evt_past", webhook_id).await;
    let filed = partitions(&worker)
        .await
        .into_iter()
        .find(|p| p.0 == holder)
        .and_then(|p| p.1)
        .expect("the partition's start");
    assert!(
        filed <= stamped && stamped < filed + time::Duration::seconds(1),
        "{holder} starts at {filed}, the event is stamped {stamped}"
    );
}

#[tokio::test]
async fn partitions_are_created_beside_a_long_query() {
    let mut config = test_config();
    config.retention = seconds_partitions(3600, 3600);
    let worker = TestWorker::start_with(config).await;
    // A reader that does not finish: it holds the log's tables against exclusive locks.
    let reader = crate::harness::connect_db(&worker.config.database.url).await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM deliveries; SELECT count(*) FROM attempts")
        .await
        .expect("a long reader");
    // The partitions created at the start are behind us: the next ones are due.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let pruned = tokio::time::timeout(Duration::from_secs(20), worker.cli(&["prune"]))
        .await
        .expect("prune does not wait behind the reader");
    assert!(pruned.success, "{}", pruned.stderr);
    let now = time::OffsetDateTime::now_utc();
    assert!(
        partitions(&worker)
            .await
            .iter()
            .any(|p| p.1.is_some_and(|s| s > now)),
        "a partition ahead of now, created while the reader ran"
    );
    // And the reader went on meanwhile: its transaction is still good.
    reader
        .batch_execute("SELECT count(*) FROM events; COMMIT")
        .await
        .expect("the reader's transaction");
}

/// The tables a partition's retirement leaves beside the log (staged copies, replaced
/// partitions).
async fn leftovers(worker: &TestWorker) -> Vec<String> {
    worker
        .db
        .query(
            "SELECT relname::text FROM pg_class
             WHERE relname LIKE '%\\_staged' OR relname LIKE '%\\_replaced' ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn what_changes_while_a_partition_is_compacted_stays_as_it_is_now() {
    let mut config = test_config();
    config.retention = seconds_partitions(1, 60);
    config.delivery.retry_schedule =
        RetrySchedule::new(vec![Duration::from_millis(200)]).expect("valid schedule");
    let worker = TestWorker::start_with(config).await;
    let ends = worker.healthy_and_failing("cmp_swap", 500).await;
    let bad = uuid::Uuid::parse_str(&ends.bad).expect("uuid");
    let started = Instant::now();
    let (retried, _) = worker.publish("deal.won", "cmp_swap", json!({})).await;
    let (under_way, _) = worker.publish("deal.won", "cmp_swap", json!({})).await;
    for event in [&retried, &under_way] {
        worker.wait_for_status(event, &ends.ok, "succeeded").await;
        worker.wait_for_status(event, &ends.bad, "failed").await;
    }
    worker
        .db
        .execute(
            "UPDATE deliveries SET status = 'retrying' WHERE event_id = $1 AND webhook_id = $2",
            &[&under_way, &bad],
        )
        .await
        .expect("under way");

    // A query holds the partition's attempts (only them: the other partitions past retention
    // still go): the first round copies what stays (the young Failed delivery, the one under
    // way) and waits a round for the lock.
    let holder = partition_of(&worker, &retried, &ends.bad).await;
    let attempts = holder.replacen("deliveries_", "attempts_", 1);
    sleep_until(started + Duration::from_millis(2500)).await;
    let reader = crate::harness::connect_db(&worker.config.database.url).await;
    reader
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {attempts} IN ACCESS SHARE MODE"
        ))
        .await
        .expect("a long query");
    let first = worker.cli(&["prune"]).await;
    assert!(first.success, "{}", first.stderr);
    assert_eq!(
        leftovers(&worker).await.len(),
        3,
        "staged copies of the three partitions"
    );
    reader.batch_execute("COMMIT").await.expect("commit");

    // Meanwhile the Failed one is retried by hand and succeeds (it need not stay any more),
    // and the one under way gets another attempt.
    ends.failing.set_default(Reply::Status(200));
    let failed_id: String = worker
        .db
        .query_one(
            "SELECT id::text FROM deliveries WHERE event_id = $1 AND webhook_id = $2",
            &[&retried, &bad],
        )
        .await
        .expect("delivery")
        .get(0);
    let (status, body) = worker
        .api("POST", &format!("/v1/deliveries/{failed_id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    worker
        .wait_for_status(&retried, &ends.bad, "succeeded")
        .await;
    worker
        .db
        .batch_execute(&format!(
            "INSERT INTO attempts (delivery_id, webhook_id, attempt_number, trigger,
                 attempted_at, duration_ms, request_headers)
             SELECT d.id, d.webhook_id, d.attempt_count + 1, 'automatic', now(), 1, '[]'
             FROM deliveries d WHERE d.event_id = '{under_way}' AND d.webhook_id = '{bad}';
             UPDATE deliveries SET attempt_count = attempt_count + 1
             WHERE event_id = '{under_way}' AND webhook_id = '{bad}'"
        ))
        .await
        .expect("another attempt");

    let second = worker.cli(&["prune"]).await;
    assert!(second.success, "{}", second.stderr);
    assert_eq!(
        kept(&worker, &under_way).await,
        (1, 3, true),
        "the one under way stays with its new attempt"
    );
    assert_eq!(
        kept(&worker, &retried).await,
        (0, 0, false),
        "the retried one succeeded and went, with its event"
    );
    let orphans: i64 = worker
        .db
        .query_one(
            "SELECT count(*) FROM attempts a
             WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)",
            &[],
        )
        .await
        .expect("orphans")
        .get(0);
    assert_eq!(orphans, 0, "no attempt outlives its delivery");
    assert_eq!(leftovers(&worker).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_detach_cut_short_by_a_long_reader_is_finished_by_the_next_round() {
    let mut config = test_config();
    config.retention = seconds_partitions(1, 1);
    let worker = TestWorker::start_with(config).await;
    // The partition the upgrade left and the first ones created are past retention.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // A reader of every partition: a concurrent detach waits for it, past the lock timeout,
    // and is left pending (PostgreSQL allows one pending detach per table).
    let reader = crate::harness::connect_db(&worker.config.database.url).await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM attempts")
        .await
        .expect("a long reader");
    let first = worker.cli(&["prune"]).await;
    assert!(first.success, "{}", first.stderr);
    reader.batch_execute("COMMIT").await.expect("commit");

    let second = worker.cli(&["prune"]).await;
    assert!(second.success, "{}", second.stderr);
    let pending: i64 = worker
        .db
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhdetachpending",
            &[],
        )
        .await
        .expect("pending detaches")
        .get(0);
    assert_eq!(pending, 0, "the pending detach was finished");
    assert!(
        partitions(&worker).await.iter().all(|p| p.1.is_some()),
        "the partition the upgrade left is gone"
    );
    assert_eq!(leftovers(&worker).await, Vec::<String>::new());
}
