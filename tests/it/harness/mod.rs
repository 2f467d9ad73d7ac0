//! Test harness, by what it drives: [`worker`] (`TestWorker`, a whole worker on fresh broker
//! names and a fresh database, torn down on drop), [`receiver`] (`TestReceiver`, a webhook
//! endpoint whose replies are scripted), [`database`] and [`broker`] (the tests' own side of
//! each); here, a fresh config and `wait_until` (poll a condition against a deadline instead
//! of sleeping a fixed time).

#![allow(
    dead_code,
    reason = "shared by the it, outage and cluster test binaries; each uses part of it"
)]

mod broker;
mod database;
mod receiver;
mod worker;

pub use broker::*;
pub use database::*;
pub use receiver::*;
pub use worker::*;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use rand::Rng;
use tesoro_webhooks::{config::Config, retry::RetrySchedule};

pub const TOKEN: &str = "test-admin-token";
/// Long enough for a loaded CI machine, short enough that a hang fails the test soon.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` at the deadline.
pub async fn wait_until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until_within(DEADLINE, what, check).await
}

/// `wait_until` with a deadline of its own, for waits that are long by design.
pub async fn wait_until_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample `series` (a metric name with its labels, as /metrics prints it:
/// `tesoro_webhooks_attempts_total{result="delivered"}`) in a /metrics text.
pub fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

fn random_suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// The shortest wait of the tests' retry tier: 200 ms less its 10 % jitter.
pub const SHORTEST_RETRY: Duration = Duration::from_millis(180);

/// A config on fresh names: prefix, events exchange, database; a 200 ms retry schedule.
pub fn test_config() -> Config {
    let suffix = random_suffix();
    let mut config = Config::defaults().expect("defaults load");
    config.amqp.prefix = format!("test_{suffix}");
    config.amqp.events_exchange = format!("test_{suffix}.crm-events");
    config.amqp.prefetch = 64;
    // Few tries, so a failing message reaches quarantine within about 1.5 s.
    config.amqp.delivery_limit = 5;
    config.database.url = format!("postgres://postgres@127.0.0.1:5432/tw_test_{suffix}");
    config.api.admin_token = TOKEN.into();
    config.delivery.retry_schedule =
        RetrySchedule::new(vec![Duration::from_millis(200); 4]).expect("valid schedule");
    config.delivery.timeout = Duration::from_secs(2);
    config.delivery.allow_private_targets = true;
    config
}

/// Runs `work` to completion from `Drop`, which may run inside the test's runtime (where
/// blocking on it is not allowed): on a thread of its own, with a runtime of its own.
fn clean_up(work: impl Future<Output = ()> + Send + 'static) {
    let cleanup = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime")
            .block_on(work);
    });
    let _ = cleanup.join();
}
