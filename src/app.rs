//! Wiring: storage, sender, broker and API started together, supervised, and shut down on a
//! cancellation token. `run` takes a bound listener so tests start the whole worker in-process.

use std::{sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api::{self, ApiState},
    broker::{AckMode, Broker, BrokerError, Publisher, Topology},
    config::Config,
    domain::Catalog,
    pipeline::{EndpointLimiter, Pipeline, Subscriptions, fanout, jobs, parking},
    sender::{Sender, SenderError},
    storage::{Recorder, Storage, StorageError},
    telemetry,
};

/// The dead-letter consumer does little per message; a small window is plenty.
const DEAD_PREFETCH: u16 = 32;
/// Pause before reconnecting after the broker connection is lost.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Sender(#[from] SenderError),
    #[error("admin API: {0}")]
    Api(#[from] std::io::Error),
}

/// Creates the database if missing, applies migrations and declares the broker topology:
/// what `migrate` does, and what `run` does first. Idempotent.
pub async fn prepare(config: &Config) -> Result<(Storage, Broker), AppError> {
    let storage = Storage::connect(&config.database).await?;
    let broker = Broker::connect(&config.amqp.url, topology(config)).await?;
    broker.declare_topology().await?;
    Ok((storage, broker))
}

pub fn topology(config: &Config) -> Topology {
    Topology::new(&config.amqp, &config.delivery.retry_schedule.tiers())
}

/// Runs the worker and the admin API until `shutdown` is cancelled. Fails fast when the
/// database or broker is unreachable at start; later broker outages are reconnected.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let (storage, broker) = prepare(&config).await?;
    let sender = Sender::new(&config.delivery)?;
    let subscriptions = Arc::new(Subscriptions::new(storage.clone()));
    let follow = {
        let subscriptions = subscriptions.clone();
        let url = config.database.url.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { subscriptions.follow_changes(&url, shutdown).await })
    };
    let (publisher_tx, publisher_rx) = watch::channel(None);
    let api_state = Arc::new(ApiState {
        storage: storage.clone(),
        subscriptions: subscriptions.clone(),
        catalog: Catalog::builtin(),
        admin_token: config.api.admin_token.clone(),
        allow_private_targets: config.delivery.allow_private_targets,
        metrics: telemetry::prometheus(),
        publisher: publisher_rx,
    });
    tracing::info!(listen = %listener.local_addr()?, prefix = %config.amqp.prefix, "worker started");
    let api = axum::serve(listener, api::router(api_state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let worker = Worker {
        config: &config,
        recorder: Recorder::start(&config.database)?,
        storage,
        subscriptions,
        sender,
        publisher: publisher_tx,
        shutdown: shutdown.clone(),
    };
    let (api_result, ()) = tokio::join!(api, worker.supervise(broker));
    let _ = follow.await;
    api_result?;
    tracing::info!("worker stopped");
    Ok(())
}

struct Worker<'a> {
    config: &'a Config,
    storage: Storage,
    recorder: Recorder,
    subscriptions: Arc<Subscriptions>,
    sender: Sender,
    /// Shares the live publisher with the API (and tells readiness the consumers are up).
    publisher: watch::Sender<Option<Publisher>>,
    shutdown: CancellationToken,
}

impl Worker<'_> {
    /// Consumes until shutdown, reconnecting whenever the broker connection or a consumer
    /// fails. In-flight messages of a lost connection are redelivered by the broker and the
    /// dedupe check skips whatever already settled.
    async fn supervise(&self, first: Broker) {
        let mut connected = Some(first);
        while !self.shutdown.is_cancelled() {
            let broker = match connected.take() {
                Some(broker) => broker,
                None => match self.reconnect().await {
                    Some(broker) => broker,
                    None => break,
                },
            };
            if let Err(e) = self.consume(&broker).await {
                tracing::error!(error = %e, "broker connection lost; reconnecting");
            }
            broker.close().await;
        }
    }

    async fn reconnect(&self) -> Option<Broker> {
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(RECONNECT_PAUSE) => {}
            }
            let attempt = async {
                let broker = Broker::connect(&self.config.amqp.url, topology(self.config)).await?;
                broker.declare_topology().await?;
                Ok::<_, BrokerError>(broker)
            };
            match attempt.await {
                Ok(broker) => return Some(broker),
                Err(e) => tracing::warn!(error = %e, "cannot reach the broker yet"),
            }
        }
    }

    /// Runs the three consumers and the parking sweeper on one connection until shutdown or the first failure, then
    /// lets in-flight handlers finish within a grace period.
    async fn consume(&self, broker: &Broker) -> Result<(), BrokerError> {
        let pipeline = Arc::new(Pipeline {
            storage: self.storage.clone(),
            recorder: self.recorder.clone(),
            subscriptions: self.subscriptions.clone(),
            limiter: EndpointLimiter::new(
                self.config.delivery.max_in_flight_per_endpoint,
                self.config.delivery.timeout,
            ),
            in_flight: tokio::sync::Semaphore::new(self.config.delivery.max_in_flight),
            sender: self.sender.clone(),
            publisher: broker.publisher().await?,
            schedule: self.config.delivery.retry_schedule.clone(),
            catalog: Catalog::builtin(),
            max_event_size: self.config.delivery.max_event_bytes(),
        });
        let tracker = TaskTracker::new();
        // Consumers stop on shutdown or when a sibling fails, which `stop` signals.
        let stop = self.shutdown.child_token();
        let topology = broker.topology();
        let prefetch = self.config.amqp.prefetch;
        let consumers = async {
            let p = pipeline.clone();
            let events = broker.consume(
                &topology.events_queue,
                prefetch,
                AckMode::Coalesced,
                &stop,
                &tracker,
                move |m| fanout::handle_event(p.clone(), m),
            );
            let p = pipeline.clone();
            let deliveries = broker.consume(
                &topology.deliveries_queue,
                prefetch,
                AckMode::Coalesced,
                &stop,
                &tracker,
                move |m| jobs::handle_job(p.clone(), m),
            );
            let p = pipeline.clone();
            let dead = broker.consume(
                &topology.dead_queue,
                DEAD_PREFETCH,
                AckMode::Coalesced,
                &stop,
                &tracker,
                move |m| jobs::handle_dead(p.clone(), m),
            );
            let sweeper = parking::sweep_parked(pipeline.clone(), stop.clone());
            tokio::try_join!(events, deliveries, dead, sweeper)
        };
        self.publisher
            .send_replace(Some(pipeline.publisher.clone()));
        let result = consumers.await.map(|_| ());
        self.publisher.send_replace(None);
        stop.cancel();
        tracker.close();
        let grace = self.config.delivery.timeout + Duration::from_secs(5);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                "in-flight deliveries did not finish in time; the broker will redeliver them"
            );
        }
        result
    }
}
