//! Past one machine, on RabbitMQ's own clustering: a three-node cluster beside the default
//! broker (its own node names, ports and data directories; the default node is left alone),
//! two worker processes on it, and the node that leads the events queue killed with `kill -9`
//! under load. Its own test binary: the nodes take a core's worth of CPU while they run.

#[path = "it/harness/mod.rs"]
mod harness;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use harness::{TestReceiver, TestWorker, test_config, wait_until};

const NODES: u16 = 3;
/// AMQP ports 5691.., distribution ports 25691..: clear of the default node's 5672/25672.
const FIRST_PORT: u16 = 5690;

fn node(i: u16) -> String {
    format!("twc{i}@localhost")
}

fn rabbitmqctl(i: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl")
        .arg("-n")
        .arg(node(i))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Three nodes, clustered; stopped and their directories removed when dropped, also when the
/// test panics.
struct Cluster {
    base: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        // Nodes left by a run that was killed would hold the ports.
        for i in 1..=NODES {
            let _ = rabbitmqctl(i, &["stop"]);
        }
        let base = tempfile::Builder::new()
            .prefix("tw-cluster-")
            .tempdir()
            .expect("cluster dir")
            .keep();
        let cluster = Self { base };
        for i in 1..=NODES {
            cluster.start_node(i);
        }
        for i in 1..=NODES {
            wait_for_node(i);
        }
        for i in 2..=NODES {
            for step in [
                &["stop_app"][..],
                &["join_cluster", &node(1)],
                &["start_app"],
            ] {
                rabbitmqctl(i, step).unwrap_or_else(|e| panic!("{} {step:?}: {e}", node(i)));
            }
        }
        cluster
    }

    fn dir(&self, i: u16) -> PathBuf {
        self.base.join(format!("n{i}"))
    }

    fn start_node(&self, i: u16) {
        let dir = self.dir(i);
        std::fs::create_dir_all(&dir).expect("node dir");
        // The consistent-hash exchange, for amqp.event_queues above 1.
        std::fs::write(
            dir.join("enabled_plugins"),
            "[rabbitmq_consistent_hash_exchange].",
        )
        .expect("plugins file");
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.local = 127.0.0.1:{}\nloopback_users = none\n",
                FIRST_PORT + i
            ),
        )
        .expect("node config");
        // The server runs as the rabbitmq user: its directories must be its own.
        run(
            "chown",
            &["-R", "rabbitmq:rabbitmq", &self.base.to_string_lossy()],
        );
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", node(i))
            .env("RABBITMQ_NODE_PORT", (FIRST_PORT + i).to_string())
            .env("RABBITMQ_DIST_PORT", (20000 + FIRST_PORT + i).to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            .status()
            .expect("rabbitmq-server");
        assert!(status.success(), "{} did not start", node(i));
    }

    fn urls(&self) -> String {
        (1..=NODES)
            .map(|i| format!("amqp://guest:guest@127.0.0.1:{}/%2f", FIRST_PORT + i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node that leads `queue`.
    fn leader_of(&self, queue: &str) -> u16 {
        leader(queue, None).unwrap_or_else(|| panic!("{queue} has no leader"))
    }

    fn kill(&self, i: u16) {
        let pid = std::fs::read_to_string(self.dir(i).join("pid")).expect("pid file");
        run("kill", &["-9", pid.trim()]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 1..=NODES {
            if rabbitmqctl(i, &["stop"]).is_err()
                && let Ok(pid) = std::fs::read_to_string(self.dir(i).join("pid"))
            {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn run(command: &str, args: &[&str]) {
    let status = Command::new(command)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    assert!(status.success(), "{command} {args:?} failed");
}

/// A node registers with epmd a few seconds after `-detached` returns; only then can
/// await_startup wait for it.
fn wait_for_node(i: u16) {
    let start = Instant::now();
    while rabbitmqctl(i, &["await_startup", "--timeout", "60"]).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{} never started",
            node(i)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The node that leads `queue`, asked of the nodes other than `except` (one that was killed).
fn leader(queue: &str, except: Option<u16>) -> Option<u16> {
    let listing = (1..=NODES)
        .filter(|i| Some(*i) != except)
        .find_map(|i| rabbitmqctl(i, &["list_queues", "--silent", "name", "leader"]).ok())?;
    let name = listing.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next() == Some(queue)).then(|| fields.next().map(str::to_owned))?
    })?;
    (1..=NODES).find(|i| node(*i) == name)
}

/// The node that leads `queue` once `killed` no longer does.
fn wait_for_new_leader(queue: &str, killed: u16) -> u16 {
    let start = Instant::now();
    loop {
        match leader(queue, Some(killed)) {
            Some(i) if i != killed => return i,
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no new leader for {queue}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One cluster at a time: the tests share its node names and ports.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_a_cluster_survive_the_events_queue_leader_being_killed() {
    let _one = ONE_CLUSTER.lock().await;
    two_workers_survive_a_leader_killed(1).await;
}

/// Three event queues on three nodes lead one each, and the node that leads the first is
/// killed under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_event_queues_lead_on_three_nodes_and_survive_one_being_killed() {
    let _one = ONE_CLUSTER.lock().await;
    two_workers_survive_a_leader_killed(3).await;
}

async fn two_workers_survive_a_leader_killed(event_queues: u16) {
    const EVENTS: usize = 1500;
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("cluster");
    let mut config = test_config();
    config.amqp.url = cluster.urls();
    config.amqp.event_queues = event_queues;
    let mut worker = TestWorker::start_process(config).await;
    let mut sibling = worker.start_sibling().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_cluster", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id").to_owned();
    let events_queues = worker.broker.topology().events_queues.clone();
    for queue in &events_queues {
        wait_until("both workers consuming", || async {
            (worker.broker.consumers(queue).await.ok()? == 2).then_some(())
        })
        .await;
    }
    let leaders: std::collections::BTreeSet<u16> =
        events_queues.iter().map(|q| cluster.leader_of(q)).collect();
    assert_eq!(
        leaders.len(),
        events_queues.len(),
        "each events queue led by a node of its own: {leaders:?}"
    );
    let events_queue = events_queues[0].clone();
    // 300 events/s for 5 s; the events queue's leader dies 1.5 s in.
    let publishing = harness::publish_at_300_per_second(&worker.config, "cmp_cluster", EVENTS);
    let killing = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = cluster.leader_of(&events_queue);
        cluster.kill(leader);
        leader
    };
    let (ids, killed) = tokio::join!(publishing, killing);
    let queue = events_queue.clone();
    let leader = tokio::task::spawn_blocking(move || wait_for_new_leader(&queue, killed));

    for id in &ids {
        worker.wait_for_status(id, &webhook_id, "succeeded").await;
    }
    let new_leader = leader.await.expect("leader");
    assert_ne!(new_leader, killed, "another node leads the events queue");
    let missing = receiver.missing(&ids);
    assert_eq!(
        missing,
        0,
        "events never delivered after {} was killed",
        node(killed)
    );
    assert!(
        worker.process().is_running() && sibling.is_running(),
        "no worker restarted: {}\n{}",
        worker.process().log(),
        sibling.log()
    );
    drop(sibling);
    drop(worker);
    drop(cluster);
}
