//! The dashboard's reads, made against the worker's API while the run loads it: what a tenant
//! waits for when the log is large.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::report::{percentile, round};
use tesoro_webhooks::domain::{CompanyId, WebhookId};

/// The reads a dashboard page makes, each timed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Read {
    /// `GET /v1/deliveries?webhook_id=`: a webhook's deliveries, newest first.
    WebhookDeliveries,
    /// `GET /v1/webhooks/{id}/attempts`: a webhook's attempts, newest first.
    WebhookAttempts,
    /// `GET /v1/deliveries?company_id=&status=failed`: a company's Failed deliveries.
    CompanyFailed,
    /// `GET /v1/webhooks/{id}/health`.
    WebhookHealth,
    /// `GET /v1/deliveries/{id}`: one delivery with its attempts.
    Delivery,
}

impl Read {
    fn name(self) -> &'static str {
        match self {
            Read::WebhookDeliveries => "webhook_deliveries",
            Read::WebhookAttempts => "webhook_attempts",
            Read::CompanyFailed => "company_failed",
            Read::WebhookHealth => "webhook_health",
            Read::Delivery => "delivery",
        }
    }
}

/// Pause between two rounds of the five reads: a few dashboards refreshing, not a load test.
const ROUND_PAUSE: Duration = Duration::from_millis(50);

/// Each read's durations, in ms.
#[derive(Debug, Clone, Default)]
pub struct ReadTimes(BTreeMap<Read, Vec<f64>>);

impl ReadTimes {
    pub fn add(&mut self, read: Read, took: Duration) {
        self.0
            .entry(read)
            .or_default()
            .push(took.as_secs_f64() * 1000.0);
    }

    /// `{"webhook_deliveries": {"p50": .., "p99": .., "count": ..}, ...}`
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (read, times) in &self.0 {
            let mut sorted = times.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            out.insert(
                read.name().to_owned(),
                json!({
                    "p50": round(percentile(&sorted, 0.50), 2),
                    "p99": round(percentile(&sorted, 0.99), 2),
                    "count": sorted.len(),
                }),
            );
        }
        Value::Object(out)
    }

    /// The worst p99 of the reads, in ms.
    pub fn worst_p99(&self) -> f64 {
        self.0
            .values()
            .map(|times| {
                let mut sorted = times.clone();
                sorted.sort_unstable_by(f64::total_cmp);
                percentile(&sorted, 0.99)
            })
            .fold(0.0, f64::max)
    }
}

/// Where the reads look: a webhook and its company, drawn at random each round.
pub struct Reader {
    client: reqwest::Client,
    base: String,
    token: String,
    targets: Vec<(WebhookId, CompanyId)>,
    /// A webhook of the run's own, which gets deliveries while it runs: where the delivery
    /// read finds one when the webhooks drawn so far had none.
    home: WebhookId,
}

impl Reader {
    pub fn new(
        base: String,
        token: String,
        targets: Vec<(WebhookId, CompanyId)>,
        home: WebhookId,
    ) -> anyhow::Result<Self> {
        // The API is plain HTTP, but reqwest wants a TLS provider all the same.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            client,
            base,
            token,
            targets,
            home,
        })
    }

    /// Waits until the worker's API answers (it starts with the worker), or `stop` fires.
    pub async fn wait_until_up(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.is_cancelled() {
            let url = format!("{}/healthz", self.base);
            if let Ok(response) = self.client.get(url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the worker's API did not answer at {}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Reads in rounds until `stop` fires or the API goes away (the phase stops the worker
    /// before it returns); fails on the first answer that is not a 200.
    pub async fn run(&self, stop: CancellationToken) -> anyhow::Result<ReadTimes> {
        let mut times = ReadTimes::default();
        let mut seen = None;
        while !stop.is_cancelled() {
            match self.round(&mut times, &mut seen).await {
                Ok(()) => {}
                Err(ReadError::Gone) => break,
                Err(ReadError::Refused(e)) => return Err(e),
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(ROUND_PAUSE) => {}
            }
        }
        Ok(times)
    }

    /// One of each read. The delivery read takes the newest delivery of this round's webhook,
    /// or, when it has none (most preloaded webhooks have few), the last one `seen`, or the
    /// newest of the run's own webhook (looked up untimed).
    async fn round(
        &self,
        times: &mut ReadTimes,
        seen: &mut Option<String>,
    ) -> Result<(), ReadError> {
        let Some((webhook, company)) = self.targets.choose(&mut rand::rng()) else {
            return Ok(());
        };
        let deliveries = self
            .get(
                times,
                Read::WebhookDeliveries,
                &format!("/v1/deliveries?webhook_id={webhook}"),
            )
            .await?;
        self.get(
            times,
            Read::WebhookAttempts,
            &format!("/v1/webhooks/{webhook}/attempts"),
        )
        .await?;
        self.get(
            times,
            Read::CompanyFailed,
            &format!("/v1/deliveries?company_id={company}&status=failed"),
        )
        .await?;
        self.get(
            times,
            Read::WebhookHealth,
            &format!("/v1/webhooks/{webhook}/health"),
        )
        .await?;
        if let Some(delivery) = deliveries["data"][0]["id"].as_str() {
            *seen = Some(delivery.to_owned());
        }
        if seen.is_none() {
            let path = format!("/v1/deliveries?webhook_id={}&limit=1", self.home);
            let mut untimed = ReadTimes::default();
            let home = self
                .get(&mut untimed, Read::WebhookDeliveries, &path)
                .await?;
            *seen = home["data"][0]["id"].as_str().map(str::to_owned);
        }
        if let Some(delivery) = seen.as_deref() {
            self.get(times, Read::Delivery, &format!("/v1/deliveries/{delivery}"))
                .await?;
        }
        Ok(())
    }

    async fn get(&self, times: &mut ReadTimes, read: Read, path: &str) -> Result<Value, ReadError> {
        let started = Instant::now();
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|_| ReadError::Gone)?;
        let status = response.status();
        let body = response.bytes().await.map_err(|_| ReadError::Gone)?;
        times.add(read, started.elapsed());
        if !status.is_success() {
            return Err(ReadError::Refused(anyhow::anyhow!(
                "GET {path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )));
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("GET {path}: not JSON"))
            .map_err(ReadError::Refused)
    }
}

/// Why a read failed: the API went away (the worker stopped), or it answered wrongly.
enum ReadError {
    Gone,
    Refused(anyhow::Error),
}
