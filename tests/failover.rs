//! PostgreSQL failover: a worker whose `database.url` names a primary and its synchronous
//! standby (`target_session_attrs=read-write`) loses nothing when the primary's postmaster is
//! killed under load and the standby promoted, and goes on in the same process. Its own test
//! binary, run after the others: it builds two PostgreSQL clusters of its own on free ports
//! (the default one on 5432 is left alone) and removes them even when it fails.

#[path = "it/harness/mod.rs"]
mod harness;

use std::{process::Command, time::Duration};

use harness::{TestReceiver, TestWorker, test_config, wait_until};

/// How long the worker may take to resume once a primary answers again: its probes back off
/// up to 30 s apart; the rest is margin for a loaded machine.
const RESUMES_WITHIN: Duration = Duration::from_secs(60);

/// Runs `program` with `args`, panicking if it fails.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn postgres_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .expect("a PostgreSQL installation")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// A PostgreSQL cluster of the test's own, removed on drop (also when the test panics).
struct Cluster {
    version: String,
    name: &'static str,
    port: u16,
}

impl Cluster {
    /// Creates the cluster `name` on a free port, trusting connections and replication from
    /// 127.0.0.1; not started.
    fn create(name: &'static str) -> Self {
        let version = postgres_version();
        // What a run that could not clean up left.
        remove(&version, name);
        let port = free_port();
        run(
            "pg_createcluster",
            &[&version, name, "-p", &port.to_string()],
        );
        let cluster = Self {
            version,
            name,
            port,
        };
        let hba = cluster.config_file("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n{rules}"
            ),
        )
        .expect("write pg_hba.conf");
        cluster
    }

    fn config_file(&self, file: &str) -> String {
        format!("/etc/postgresql/{}/{}/{file}", self.version, self.name)
    }

    fn data_directory(&self) -> String {
        format!("/var/lib/postgresql/{}/{}", self.version, self.name)
    }

    fn ctl(&self, action: &str) {
        run(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &self.version,
                self.name,
                action,
            ],
        );
    }

    /// Makes this (new, stopped) cluster a streaming standby of `primary`: its data
    /// directory emptied and filled by `pg_basebackup -R`.
    fn follow(&self, primary: &Cluster) {
        let data = self.data_directory();
        for entry in std::fs::read_dir(&data).expect("data directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("empty the data directory");
            } else {
                std::fs::remove_file(&path).expect("empty the data directory");
            }
        }
        run(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
            ],
        );
    }

    /// `kill -9` of the postmaster: no shutdown, no checkpoint.
    fn kill_postmaster(&self) {
        let pid_file = format!("{}/postmaster.pid", self.data_directory());
        let pids = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
        let pid = pids.lines().next().expect("the postmaster's pid").trim();
        run("kill", &["-9", pid]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        remove(&self.version, self.name);
    }
}

/// Removes the cluster `name`, whatever state it is in; its processes first (a killed
/// postmaster leaves backends until they notice).
fn remove(version: &str, name: &str) {
    let _ = Command::new("pkill")
        .args(["-9", "-f", &format!("postgres: {version}/{name}")])
        .status();
    let _ = Command::new("pkill")
        .args([
            "-9",
            "-f",
            &format!("/var/lib/postgresql/{version}/{name} "),
        ])
        .status();
    let _ = Command::new("pg_dropcluster")
        .args(["--stop", version, name])
        .output();
}

/// A one-off connection to the cluster on `port`.
async fn psql(port: u16, sql: &str) -> Vec<tokio_postgres::Row> {
    let client =
        harness::connect_db(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).await;
    client.query(sql, &[]).await.expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_killed_under_load_fails_over_to_its_standby_and_loses_nothing() {
    const EVENTS: usize = 3000;
    let primary = Cluster::create("tw_failover_primary");
    primary.ctl("start");
    let standby = Cluster::create("tw_failover_standby");
    standby.follow(&primary);
    standby.ctl("start");
    // Synchronous: a commit the worker saw is on the standby too.
    psql(
        primary.port,
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    )
    .await;
    psql(primary.port, "SELECT pg_reload_conf()").await;
    wait_until("the standby to replicate synchronously", || async {
        let rows = psql(
            primary.port,
            "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'",
        )
        .await;
        (!rows.is_empty()).then_some(())
    })
    .await;

    let mut config = test_config();
    let database = config
        .database
        .url
        .rsplit('/')
        .next()
        .expect("database name")
        .to_owned();
    config.database.url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{database}\
         ?target_session_attrs=read-write&connect_timeout=2",
        primary.port, standby.port
    );
    let mut worker = TestWorker::start_process(config).await;
    let receiver = TestReceiver::start().await;
    worker
        .create_webhook("cmp_failover", &receiver.url(), &["deal.won"])
        .await;

    // 300 events/s for 10 s; the primary dies 4 s in, the standby is promoted 5 s later.
    let publishing = harness::publish_at_300_per_second(&worker.config, "cmp_failover", EVENTS);
    let failover = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        primary.kill_postmaster();
        let down = wait_until("/readyz to report the database down", || worker.not_ready()).await;
        assert!(down.contains(&"database".to_owned()), "{down:?}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        standby.ctl("promote");
    };
    let (ids, ()) = tokio::join!(publishing, failover);
    assert_eq!(ids.len(), EVENTS);
    worker.wait_ready_within(RESUMES_WITHIN).await;

    // On the new primary: every event delivered once and recorded.
    let db = harness::connect_db(&worker.config.database.url).await;
    let (succeeded, all) = wait_until("every event delivered and recorded", || async {
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FROM deliveries",
                &[],
            )
            .await
            .ok()?;
        let (succeeded, all): (i64, i64) = (row.get(0), row.get(1));
        (succeeded == EVENTS as i64).then_some((succeeded, all))
    })
    .await;
    assert_eq!((succeeded, all), (EVENTS as i64, EVENTS as i64));
    harness::every_event_received_none_quarantined(&worker, &receiver, &ids).await;
    assert!(worker.process().is_running(), "the same worker process");
    // The migrations' lock is taken on the new primary.
    let migrated = worker.cli(&["migrate"]).await;
    assert!(migrated.success, "{}", migrated.stderr);
}
