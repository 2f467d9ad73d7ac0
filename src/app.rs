//! Wiring: storage, sender, broker and API started together, supervised, and shut down on a
//! cancellation token. `run` takes a bound listener so tests start the whole worker in-process.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::future::try_join_all;
use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api::{self, ApiState},
    backoff::Backoff,
    broker::{Broker, BrokerError, Publisher, Topology},
    config::Config,
    domain::Catalog,
    pipeline::{
        Circuits, EndpointLimiter, Pipeline, Subscriptions, fanout, jobs, parking, rate::RateLimits,
    },
    readiness::{Dependency, OutageSignal, Readiness},
    sender::{HostResolver, Sender, SenderError, SystemResolver, TargetGuard},
    storage::{Recorder, Storage, StorageError},
    telemetry,
    workers::SharedMembership,
};

/// The dead-letter consumer does little per message; a small window is plenty.
const DEAD_PREFETCH: u16 = 32;

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
    let storage = Storage::connect(&config.database, config.security.secret_keys.clone())
        .await?
        .with_log_partition(config.retention.partition);
    // The log's next partitions, before the first event needs one.
    storage
        .create_partitions_ahead(config.retention.partition)
        .await?;
    let broker = Broker::connect(&config.amqp, topology(config)).await?;
    broker.declare_topology().await?;
    Ok((storage, broker))
}

pub fn topology(config: &Config) -> Topology {
    let delivery = &config.delivery;
    Topology::new(
        &config.amqp,
        &delivery.retry_schedule.tiers(),
        delivery.retry_jitter,
    )
}

/// Runs the worker and the admin API until `shutdown` is cancelled. Fails fast when the
/// database or broker is unreachable at start; later broker outages are reconnected.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    run_with_resolver(config, listener, shutdown, Arc::new(SystemResolver)).await
}

/// `run`, resolving webhook host names with `resolver` (tests script it).
pub async fn run_with_resolver(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    resolver: Arc<dyn HostResolver>,
) -> Result<(), AppError> {
    let (storage, broker) = prepare(&config).await?;
    let targets = TargetGuard::new(resolver, config.delivery.target_policy());
    let sender = Sender::new(&config.delivery, targets.clone())?;
    let subscriptions = Arc::new(Subscriptions::new(storage.clone()));
    let follow = {
        let subscriptions = subscriptions.clone();
        let url = config.database.url.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { subscriptions.follow_changes(&url, shutdown).await })
    };
    let (publisher_tx, publisher_rx) = watch::channel(None);
    let readiness = Readiness::default();
    let membership = Arc::new(SharedMembership::default());
    let heartbeat = tokio::spawn(crate::workers::heartbeat(
        storage.clone(),
        membership.clone(),
        shutdown.clone(),
    ));
    let relay = tokio::spawn(crate::operational::relay(
        storage.clone(),
        publisher_rx.clone(),
        shutdown.clone(),
    ));
    let api_state = Arc::new(ApiState {
        readiness: readiness.clone(),
        storage: storage.clone(),
        subscriptions: subscriptions.clone(),
        catalog: Catalog::builtin(),
        admin_token: config.api.admin_token.clone(),
        targets,
        metrics: telemetry::prometheus(),
        publisher: publisher_rx,
    });
    tracing::info!(listen = %listener.local_addr()?, prefix = %config.amqp.prefix, "worker started");
    let api = axum::serve(listener, api::router(api_state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let worker = Worker {
        config: &config,
        recorder: Recorder::start(&storage, &config.database)?,
        storage,
        subscriptions,
        sender,
        publisher: publisher_tx,
        readiness,
        limiter: Arc::new(EndpointLimiter::new(
            config.delivery.max_in_flight_per_endpoint,
            config.delivery.timeout,
        )),
        rates: Arc::new(RateLimits::new(membership)),
        circuits: Arc::new(Circuits::new(config.circuit_breaker)),
        shutdown: shutdown.clone(),
    };
    let pruning = tokio::spawn(crate::retention::run(
        worker.storage.clone(),
        config.database.url.clone(),
        config.retention.clone(),
        shutdown.clone(),
    ));
    let (api_result, ()) = tokio::join!(api, worker.supervise(broker));
    let _ = follow.await;
    let _ = pruning.await;
    let _ = relay.await;
    let _ = heartbeat.await;
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
    /// Shares the live publisher with the API.
    publisher: watch::Sender<Option<Publisher>>,
    /// Whether the consumers are up, and which outage paused them: readiness.
    readiness: Readiness,
    /// Each endpoint's attempts in flight and pace, and the spacing of rate-limited ones:
    /// kept across broker sessions, since the endpoints do not change with the connection.
    limiter: Arc<EndpointLimiter>,
    rates: Arc<RateLimits>,
    circuits: Arc<Circuits>,
    shutdown: CancellationToken,
}

/// How a consuming session ended.
enum SessionEnd {
    /// Shutdown was asked for.
    Stopped,
    /// A handler met an outage of this dependency, or the broker connection was lost.
    Outage(Dependency),
}

/// How often the broker's and the pipeline's gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Samples until `stop`: every queue's ready messages (a passive declare each), the messages
/// this worker holds per consumed queue, its deliveries in flight, and how many workers share
/// the load (the events queue's consumers, one per worker: per-endpoint bounds hold per
/// process, so an endpoint sees up to `max_in_flight_per_endpoint` × this many attempts at
/// once). A failed sample is skipped; a lost connection ends the session through the
/// consumers.
async fn sample_gauges(
    broker: &Broker,
    pipeline: &Pipeline,
    max_in_flight: usize,
    stop: &CancellationToken,
) -> Result<(), BrokerError> {
    let topology = broker.topology();
    let mut consumed: Vec<(String, &str)> = topology
        .events_queues
        .iter()
        .map(|queue| (topology.events_role(queue), queue.as_str()))
        .collect();
    consumed.push(("deliveries".to_owned(), &topology.deliveries_queue));
    consumed.push(("dead".to_owned(), &topology.dead_queue));
    loop {
        for (role, queue) in topology.queue_roles() {
            match broker.counts(queue).await {
                Ok((ready, consumers)) => {
                    crate::metrics::queue_ready(&role, ready);
                    if queue == topology.events_queues[0] {
                        crate::metrics::workers(consumers);
                    }
                }
                Err(e) => tracing::debug!(queue, error = %e, "cannot sample the queue"),
            }
        }
        for (role, queue) in &consumed {
            crate::metrics::queue_unacked(role, broker.in_hand(queue));
        }
        let free = pipeline.in_flight.available_permits();
        crate::metrics::deliveries_in_flight(max_in_flight.saturating_sub(free));
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

/// How long a probe of the database may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Worker<'_> {
    /// Consumes until shutdown. An outage pauses the consumers: the database is probed until
    /// it answers, the broker reconnected, both with capped exponential backoff; then
    /// consuming resumes by itself. Messages handed back meanwhile are redelivered and the
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
            self.readiness.set_outage(None);
            match self.consume(&broker).await {
                SessionEnd::Stopped => {
                    broker.close().await;
                    break;
                }
                SessionEnd::Outage(Dependency::Database) => {
                    self.readiness.set_outage(Some(Dependency::Database));
                    broker.close_channels().await;
                    if !self.wait_for_database().await {
                        broker.close().await;
                        break;
                    }
                    tracing::info!("the database answers again; resuming");
                    if broker.is_connected() {
                        connected = Some(broker);
                    } else {
                        broker.close().await;
                    }
                }
                SessionEnd::Outage(Dependency::Broker) => {
                    self.readiness.set_outage(Some(Dependency::Broker));
                    broker.close().await;
                }
            }
        }
    }

    /// Connects and declares the topology, retrying with backoff; `None` on shutdown.
    async fn reconnect(&self) -> Option<Broker> {
        let mut backoff = Backoff::for_outages();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
            let attempt = async {
                let broker = Broker::connect(&self.config.amqp, topology(self.config)).await?;
                broker.declare_topology().await?;
                Ok::<_, BrokerError>(broker)
            };
            match attempt.await {
                Ok(broker) => {
                    tracing::info!("connected to the broker again; resuming");
                    return Some(broker);
                }
                Err(e) => tracing::warn!(error = %e, "cannot reach the broker yet"),
            }
        }
    }

    /// Drains `queue`, an events queue of another `amqp.event_queues`, and forgets it once
    /// it is gone.
    async fn drain<H, F>(
        &self,
        broker: &Broker,
        queue: &str,
        prefetch: u16,
        stop: &CancellationToken,
        tracker: &TaskTracker,
        handler: H,
    ) -> Result<(), BrokerError>
    where
        H: Fn(crate::broker::Message) -> F + Clone + Send + Sync + 'static,
        F: std::future::Future<Output = crate::broker::Disposition> + Send + 'static,
    {
        let drained = broker
            .drain(queue, prefetch, stop, tracker, handler)
            .await?;
        if drained.is_gone() {
            self.forget_events_queue(queue).await;
        }
        Ok(())
    }

    /// Records this layout's events queues, and unbinds those of another `amqp.event_queues`
    /// that were declared before (a changed setting): the ones to drain.
    async fn retire_events_queues(&self, broker: &Broker) -> Result<Vec<String>, SessionEnd> {
        let topology = broker.topology();
        let single = topology.single_events_queue();
        let declared = self
            .storage
            .record_events_queues(&topology.events_queues, &single)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot record the events queues");
                SessionEnd::Outage(Dependency::Database)
            })?;
        let existing = broker.retire_events_queues(&declared).await.map_err(|e| {
            tracing::error!(error = %e, "cannot unbind the events queues to drain; reconnecting");
            SessionEnd::Outage(Dependency::Broker)
        })?;
        // Removed by a worker that could not record it: not looked for again.
        for gone in declared.iter().filter(|queue| !existing.contains(queue)) {
            self.forget_events_queue(gone).await;
        }
        Ok(existing)
    }

    /// `queue` no longer exists: the next start does not look for it.
    async fn forget_events_queue(&self, queue: &str) {
        if let Err(e) = self.storage.forget_events_queue(queue).await {
            tracing::warn!(queue, error = %e,
                "cannot record that the events queue is gone; the next start looks for it");
        }
    }

    /// Probes the database with backoff until it answers; false on shutdown.
    async fn wait_for_database(&self) -> bool {
        let mut backoff = Backoff::for_outages();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return false,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
            if let Ok(true) = tokio::time::timeout(PROBE_TIMEOUT, self.storage.ping()).await {
                return true;
            }
            tracing::debug!("the database does not answer yet");
        }
    }

    /// Runs the three consumers and the parking sweeper on one connection until shutdown, an
    /// outage or the first failure, then lets in-flight handlers finish within a grace period.
    async fn consume(&self, broker: &Broker) -> SessionEnd {
        let publisher = match broker.publisher().await {
            Ok(publisher) => publisher,
            Err(e) => {
                tracing::error!(error = %e, "cannot open a publisher channel; reconnecting");
                return SessionEnd::Outage(Dependency::Broker);
            }
        };
        let pipeline = Arc::new(Pipeline {
            storage: self.storage.clone(),
            recorder: self.recorder.clone(),
            subscriptions: self.subscriptions.clone(),
            rates: self.rates.clone(),
            limiter: self.limiter.clone(),
            circuits: self.circuits.clone(),
            in_flight: tokio::sync::Semaphore::new(self.config.delivery.max_in_flight),
            sender: self.sender.clone(),
            publisher,
            schedule: self.config.delivery.retry_schedule.clone(),
            endpoint_health: self.config.endpoint_health,
            catalog: Catalog::builtin(),
            max_event_size: self.config.delivery.max_event_bytes(),
            delivery_limit: self.config.amqp.delivery_limit,
            outage: OutageSignal::new(self.shutdown.child_token()),
        });
        let retiring = match self.retire_events_queues(broker).await {
            Ok(queues) => queues,
            Err(end) => return end,
        };
        let tracker = TaskTracker::new();
        // Consumers stop on shutdown or an outage, which `stop` signals (or when a sibling
        // fails, which drops them).
        let stop = pipeline.outage.stop_token().clone();
        let topology = broker.topology();
        let (prefetch, events_prefetch) = (
            self.config.amqp.prefetch,
            self.config.amqp.events_prefetch(),
        );
        let subscribed = AtomicUsize::new(0);
        // The events queues, the deliveries queue and the dead-letter queue.
        let all_consumers = topology.events_queues.len() + 2;
        let one_subscribed = || {
            if subscribed.fetch_add(1, Ordering::SeqCst) + 1 == all_consumers {
                self.readiness.set_consuming(true);
            }
        };
        let consumers = async {
            let handle_event = |p: Arc<Pipeline>| move |m| fanout::handle_event(p.clone(), m);
            let events = try_join_all(topology.events_queues.iter().map(|queue| {
                let handler = handle_event(pipeline.clone());
                broker.consume(
                    queue,
                    events_prefetch,
                    &stop,
                    &tracker,
                    one_subscribed,
                    handler,
                )
            }));
            let drains = try_join_all(retiring.iter().map(|queue| {
                let handler = handle_event(pipeline.clone());
                self.drain(broker, queue, events_prefetch, &stop, &tracker, handler)
            }));

            let p = pipeline.clone();
            let deliveries = broker.consume(
                &topology.deliveries_queue,
                prefetch,
                &stop,
                &tracker,
                one_subscribed,
                move |m| jobs::handle_job(p.clone(), m),
            );
            let p = pipeline.clone();
            let dead = broker.consume(
                &topology.dead_queue,
                DEAD_PREFETCH,
                &stop,
                &tracker,
                one_subscribed,
                move |m| jobs::handle_dead(p.clone(), m),
            );
            let sweeper = parking::sweep_parked(pipeline.clone(), stop.clone());
            let sampler =
                sample_gauges(broker, &pipeline, self.config.delivery.max_in_flight, &stop);
            tokio::try_join!(events, drains, deliveries, dead, sweeper, sampler)
        };
        self.publisher
            .send_replace(Some(pipeline.publisher.clone()));
        let result = consumers.await;
        self.readiness.set_consuming(false);
        self.publisher.send_replace(None);
        stop.cancel();
        tracker.close();
        let grace = self.config.delivery.timeout + Duration::from_secs(5);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                "in-flight deliveries did not finish in time; the broker will redeliver them"
            );
        }
        match (result, pipeline.outage.reported()) {
            (Err(e), _) => {
                tracing::error!(error = %e, "broker connection lost; reconnecting");
                SessionEnd::Outage(Dependency::Broker)
            }
            (Ok(_), Some(dependency)) => SessionEnd::Outage(dependency),
            (Ok(_), None) => SessionEnd::Stopped,
        }
    }
}
