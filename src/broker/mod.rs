//! RabbitMQ: the one module that speaks lapin. Topology, publishing with confirms, and the
//! consume loop that acks only once a handler reports a durable outcome.

mod acks;
mod job;
mod message;
mod publisher;
mod topology;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{
    Acker, Channel, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions,
        BasicNackOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::FieldTable,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::config::AmqpConfig;
use acks::Acks;
pub use job::JobError;
pub use message::Message;
pub use publisher::Publisher;
pub use topology::{Tier, Topology};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker returned the message as unroutable to {0:?}")]
    Unroutable(String),
    #[error("broker refused the message (nack) for {0:?}; the queue may be full")]
    Nacked(String),
    #[error("consumer of {0} was cancelled by the broker")]
    ConsumerCancelled(String),
    #[error("no retry tier for a delay of {0:?}")]
    NoTier(Duration),
    #[error(
        "amqp.event_queues above 1 needs RabbitMQ's consistent-hash exchange: enable it with \
         `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` on every node ({0})"
    )]
    NoHashExchange(String),
    #[error("amqp.url names no broker node")]
    NoNode,
    #[error(
        "broker node {node} did not complete the connection within {after:?} (amqp.connect_timeout)"
    )]
    ConnectTimeout { node: String, after: Duration },
}

/// The broker refused a declaration that contradicts the existing queue (406).
fn is_precondition_failed(error: &lapin::Error) -> bool {
    is_soft_error(error, lapin::protocol::AMQPSoftError::PRECONDITIONFAILED)
}

/// The queue or exchange named does not exist (404).
fn is_not_found(error: &lapin::Error) -> bool {
    is_soft_error(error, lapin::protocol::AMQPSoftError::NOTFOUND)
}

fn is_soft_error(error: &lapin::Error, soft: lapin::protocol::AMQPSoftError) -> bool {
    use lapin::protocol::AMQPErrorKind;
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e)
        if *e.kind() == AMQPErrorKind::Soft(soft))
}

/// How often a drained events queue is looked at to see whether it is empty.
const DRAIN_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Whether `urls` is a comma-separated list of AMQP URLs lapin can connect with (`amqp://`
/// or `amqps://`), so a bad one is a config error at start instead of an IO error at the
/// first connection.
pub fn is_amqp_url(urls: &str) -> bool {
    node_urls(urls).all(|url| url.parse::<lapin::uri::AMQPUri>().is_ok())
}

/// The nodes of `amqp.url`, in the order they are tried.
fn node_urls(urls: &str) -> impl Iterator<Item = &str> {
    urls.split(',').map(str::trim)
}

/// A connection and the topology it serves.
pub struct Broker {
    connection: Connection,
    topology: Arc<Topology>,
    /// Channels that outlive the call that opened them (consumers, publishers), closed by
    /// `close` before the connection. Left to lapin, dropping a channel's last handle queues
    /// its close, which can then run after the connection began closing; lapin reports that
    /// as a connection error, logged at ERROR on every graceful stop.
    open_channels: Mutex<Vec<Channel>>,
    /// Messages each consumed queue has handed this process that are not settled yet.
    in_hand: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl Broker {
    /// Connects to the first node of `urls` (comma-separated, one or more nodes of a
    /// cluster) that answers, trying them in order.
    pub async fn connect(amqp: &AmqpConfig, topology: Topology) -> Result<Self, BrokerError> {
        // Named after the prefix, so an operator (or a test) can find this worker's connection.
        let name = format!("tesoro-webhooks/{}", topology.work_exchange);
        let mut last_error = None;
        let mut connection = None;
        for url in node_urls(&amqp.url) {
            let properties =
                ConnectionProperties::default().with_connection_name(name.as_str().into());
            // A node may accept TCP and never answer the handshake (a broker out of file
            // handles): it gets `connect_timeout`, then the next node its turn. lapin's IO
            // thread of an attempt given up on waits on its socket until the node closes it.
            let node = crate::config::redact_urls(url);
            let error = match tokio::time::timeout(
                amqp.connect_timeout,
                Connection::connect(url, properties),
            )
            .await
            {
                Ok(Ok(connected)) => {
                    connection = Some(connected);
                    break;
                }
                Ok(Err(e)) => BrokerError::from(e),
                Err(_) => BrokerError::ConnectTimeout {
                    node: node.clone(),
                    after: amqp.connect_timeout,
                },
            };
            tracing::debug!(%node, %error, "broker node does not answer");
            last_error = Some(error);
        }
        let connection = match (connection, last_error) {
            (Some(connection), _) => connection,
            (None, Some(e)) => return Err(e),
            (None, None) => return Err(BrokerError::NoNode),
        };
        Ok(Self {
            connection,
            topology: Arc::new(topology),
            open_channels: Mutex::new(Vec::new()),
            in_hand: Mutex::new(HashMap::new()),
        })
    }

    /// A channel that `close` will close before the connection.
    async fn open_channel(&self) -> Result<Channel, BrokerError> {
        let channel = self.connection.create_channel().await?;
        self.open_channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(channel.clone());
        Ok(channel)
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Messages of `queue` this process is handling (a settled one waiting for its coalesced
    /// ack is no longer counted, though the broker still holds it unacknowledged).
    pub fn in_hand(&self, queue: &str) -> usize {
        self.in_hand_counter(queue).load(Ordering::Relaxed)
    }

    fn in_hand_counter(&self, queue: &str) -> Arc<AtomicUsize> {
        self.in_hand
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    /// Declares every exchange and queue; idempotent, and safe from several processes at
    /// once. A consumed queue that an older version declared without the broker's delivery
    /// limit and dead-letter target (arguments a queue cannot change) is kept as it is, with a
    /// warning that names the policy which adds them.
    pub async fn declare_topology(&self) -> Result<(), BrokerError> {
        let mut channel = self.connection.create_channel().await?;
        if let Err(e) = self.topology.declare_exchanges(&channel).await {
            return Err(self.explain_exchange_error(e));
        }
        let mut kept = Vec::new();
        for queue in self.topology.queues() {
            match queue.declare(&channel).await {
                Ok(()) => {}
                Err(e) if queue.consumed && is_precondition_failed(&e) => {
                    // The refusal closed the channel.
                    channel = self.connection.create_channel().await?;
                    queue.keep_as_declared(&channel).await?;
                    kept.push(queue.name.to_owned());
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !kept.is_empty() {
            tracing::warn!(
                queues = ?kept,
                policy = %self.topology.safety_net_policy_command(),
                "queues declared without the broker's delivery limit and dead-letter target are kept as they are; the policy adds both"
            );
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// A hash exchange refused as an unknown type closes the connection with a bare
    /// "invalid exchange type": name the plugin it needs.
    fn explain_exchange_error(&self, error: lapin::Error) -> BrokerError {
        let unknown_type = error.to_string().contains(topology::HASH_EXCHANGE_TYPE);
        if self.topology.spreads_events() && unknown_type {
            BrokerError::NoHashExchange(error.to_string())
        } else {
            error.into()
        }
    }

    /// Stops routing events to `declared`, the events queues of another `amqp.event_queues`
    /// (a changed setting) that workers declared, now that this layout's queues are bound.
    /// Returns those that still exist: the worker drains them (see [`Broker::drain`]).
    pub async fn retire_events_queues(
        &self,
        declared: &[String],
    ) -> Result<Vec<String>, BrokerError> {
        if !self.topology.spreads_events() {
            // Its bindings, to the events exchange and to the spread queues, go with it.
            let channel = self.connection.create_channel().await?;
            self.topology.remove_unused_hash_exchange(&channel).await?;
            let _ = channel.close(200, "retired".into()).await;
        }
        let mut existing = Vec::new();
        for queue in declared {
            // A channel each: a queue removed meanwhile closes it.
            let channel = self.connection.create_channel().await?;
            let unbound = if self.topology.spreads_events() {
                self.topology
                    .unbind_other_events_queue(&channel, queue)
                    .await
            } else {
                self.inspect_on(&channel, queue).await.map(|_| ())
            };
            match unbound {
                Ok(()) => existing.push(queue.clone()),
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            let _ = channel.close(200, "retired".into()).await;
        }
        if !existing.is_empty() {
            tracing::info!(queues = ?existing,
                "events queues of another amqp.event_queues are unbound; draining them");
        }
        Ok(existing)
    }

    /// Removes our queues and exchanges (tests and benchmarks).
    pub async fn delete_topology(&self, include_events_exchange: bool) -> Result<(), BrokerError> {
        let channel = self.connection.create_channel().await?;
        self.topology
            .delete(&channel, include_events_exchange)
            .await?;
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }

    /// A publisher on its own confirm-mode channel, kept apart from consumer channels so a
    /// publishing error cannot close a consumer.
    pub async fn publisher(&self) -> Result<Publisher, BrokerError> {
        let channel = self.open_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            channel,
            topology: self.topology.clone(),
        })
    }

    /// Consumes `queue` until `shutdown` or a broker failure, running `handler` for each
    /// message on `tracker` and settling it with the handler's verdict (acks coalesced, see
    /// `acks`). `prefetch` bounds the messages (and so handler tasks) in flight on this
    /// consumer. `subscribed` runs once the broker has registered the consumer.
    pub async fn consume<H, F>(
        &self,
        queue: &str,
        prefetch: u16,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
        subscribed: impl FnOnce(),
        handler: H,
    ) -> Result<(), BrokerError>
    where
        H: Fn(Message) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Disposition> + Send + 'static,
    {
        let never = CancellationToken::new();
        self.consume_until(
            queue, prefetch, shutdown, &never, tracker, subscribed, handler,
        )
        .await
    }

    /// `consume`; and when `finish` is cancelled, cancels the consumer and still hands every
    /// message the broker sent before the cancel to `handler`, so none is left unhandled on
    /// the channel.
    #[allow(clippy::too_many_arguments)]
    async fn consume_until<H, F>(
        &self,
        queue: &str,
        prefetch: u16,
        shutdown: &CancellationToken,
        finish: &CancellationToken,
        tracker: &TaskTracker,
        subscribed: impl FnOnce(),
        handler: H,
    ) -> Result<(), BrokerError>
    where
        H: Fn(Message) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Disposition> + Send + 'static,
    {
        let channel = self.open_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        subscribed();
        let acks = Acks::start(tracker, channel.clone());
        let in_hand = self.in_hand_counter(queue);
        let mut finishing = false;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => {
                    // Stop new deliveries; in-flight handlers still ack on this channel, which
                    // their acknowledgements keep open.
                    let _ = channel
                        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                        .await;
                    return Ok(());
                }
                () = finish.cancelled(), if !finishing => {
                    finishing = true;
                    channel
                        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                        .await?;
                    continue;
                }
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return Err(e.into()),
                // The stream ends after the broker confirmed the cancel.
                None if finishing => return Ok(()),
                None => return Err(BrokerError::ConsumerCancelled(queue.to_owned())),
            };
            let acknowledgement = Acknowledgement {
                acker: delivery.acker.clone(),
                tag: delivery.delivery_tag,
                acks: acks.clone(),
                _channel: channel.clone(),
            };
            let message = Message::from(delivery);
            let handler = handler.clone();
            let in_hand = in_hand.clone();
            in_hand.fetch_add(1, Ordering::Relaxed);
            // Boxed: a handler's future runs to kilobytes (a fan-out's, with its HTTP and
            // recording state), and tokio moves a task's future by value several times
            // (spawn, into its cell, out when it completes); a box moves once.
            tracker.spawn(Box::pin(async move {
                let disposition = dispose_even_on_panic(handler(message)).await;
                acknowledgement.send(disposition).await;
                in_hand.fetch_sub(1, Ordering::Relaxed);
            }));
        }
    }

    /// Consumes `queue`, an events queue no longer routed to, until it is empty and none of
    /// its messages is in this worker's hands; then removes it if no other worker consumes it
    /// (the last one to finish removes it). A queue cannot be deleted "if empty" when it is a
    /// quorum queue, and its ready count leaves out messages held unacked: so each worker
    /// first settles what it holds and cancels its consumer, and the queue is removed only
    /// when it has neither ready messages nor consumers.
    pub async fn drain<H, F>(
        &self,
        queue: &str,
        prefetch: u16,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
        handler: H,
    ) -> Result<Drained, BrokerError>
    where
        H: Fn(Message) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Disposition> + Send + 'static,
    {
        loop {
            let finish = CancellationToken::new();
            let consuming = self.consume_until(
                queue,
                prefetch,
                shutdown,
                &finish,
                tracker,
                || {},
                handler.clone(),
            );
            let watching = async {
                while !self.is_drained(queue).await? {
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(DRAIN_CHECK_EVERY) => {}
                    }
                }
                finish.cancel();
                Ok::<_, BrokerError>(())
            };
            match tokio::try_join!(consuming, watching) {
                Ok(_) => {}
                // Removed by another worker before this one consumed it.
                Err(BrokerError::Amqp(e)) if is_not_found(&e) => return Ok(Drained::Gone),
                Err(e) => return Err(e),
            }
            while self.in_hand(queue) > 0 && !shutdown.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if shutdown.is_cancelled() {
                return Ok(Drained::Interrupted);
            }
            match self.counts(queue).await {
                // Handed back meanwhile, by this worker or another: consume again.
                Ok((ready, _)) if ready > 0 => continue,
                Ok((_, 0)) => {
                    let channel = self.connection.create_channel().await?;
                    channel
                        .queue_delete(queue.into(), QueueDeleteOptions::default())
                        .await?;
                    let _ = channel.close(200, "drained".into()).await;
                    tracing::info!(queue, "drained the events queue and removed it");
                    return Ok(Drained::Removed);
                }
                Ok(_) => return Ok(Drained::LeftToOthers),
                Err(BrokerError::Amqp(e)) if is_not_found(&e) => return Ok(Drained::Gone),
                Err(e) => return Err(e),
            }
        }
    }

    /// No message of `queue` waits, and none is in this worker's hands.
    async fn is_drained(&self, queue: &str) -> Result<bool, BrokerError> {
        Ok(self.in_hand(queue) == 0 && self.depth(queue).await? == 0)
    }

    /// Takes one message off `queue` without a consumer (operators' tools and tests).
    pub async fn fetch(&self, queue: &str) -> Result<Option<Message>, BrokerError> {
        let channel = self.connection.create_channel().await?;
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await?;
        let _ = channel.close(200, "fetched".into()).await;
        Ok(got.map(|g| Message::from(g.delivery)))
    }

    /// Messages waiting in `queue` (ready, not counting unacked ones).
    pub async fn depth(&self, queue: &str) -> Result<u32, BrokerError> {
        Ok(self.inspect(queue).await?.message_count())
    }

    /// Messages ready in `queue`, and its consumers (one passive declare).
    pub async fn counts(&self, queue: &str) -> Result<(u32, u32), BrokerError> {
        let declared = self.inspect(queue).await?;
        Ok((declared.message_count(), declared.consumer_count()))
    }

    /// Consumers attached to `queue`: a worker is consuming once this is non-zero.
    pub async fn consumers(&self, queue: &str) -> Result<u32, BrokerError> {
        Ok(self.inspect(queue).await?.consumer_count())
    }

    async fn inspect(&self, queue: &str) -> Result<lapin::Queue, BrokerError> {
        let channel = self.connection.create_channel().await?;
        let declared = self.inspect_on(&channel, queue).await?;
        let _ = channel.close(200, "inspected".into()).await;
        Ok(declared)
    }

    /// A passive declare: `queue`'s counts, or NOT_FOUND (which closes `channel`).
    async fn inspect_on(&self, channel: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
    }

    /// Up to `max` messages from the head of `queue`, left in the queue: they are taken
    /// unacked and handed back when the channel closes.
    pub async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Message>, BrokerError> {
        let channel = self.connection.create_channel().await?;
        let mut messages = Vec::new();
        while messages.len() < max {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await?;
            let Some(got) = got else { break };
            messages.push(Message::from(got.delivery));
        }
        let _ = channel.close(200, "peeked".into()).await;
        Ok(messages)
    }

    /// Sends up to `max` quarantined messages back where they were first published (after a
    /// fix), each removed only once its republish is confirmed. Returns how many.
    pub async fn requeue_quarantined(
        &self,
        publisher: &Publisher,
        max: u32,
    ) -> Result<u32, BrokerError> {
        let channel = self.connection.create_channel().await?;
        let queue = self.topology.quarantine_queue.as_str();
        let mut moved = 0;
        while moved < max {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await?;
            let Some(got) = got else { break };
            let acker = got.delivery.acker.clone();
            let message = Message::from(got.delivery);
            publisher.republish_original(&message).await?;
            acker.ack(BasicAckOptions::default()).await?;
            moved += 1;
        }
        let _ = channel.close(200, "requeued".into()).await;
        Ok(moved)
    }

    /// Closes the long-lived channels, then the connection. Call it once their users are
    /// done: a consumer's in-flight handlers still ack on its channel.
    pub async fn close(&self) {
        self.close_channels().await;
        let _ = self.connection.close(200, "shutdown".into()).await;
    }

    /// Whether the connection is still up (after a consuming session ends, it may be reused).
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// Closes the long-lived channels (consumers, publishers), keeping the connection for the
    /// next consuming session.
    pub async fn close_channels(&self) {
        let channels = std::mem::take(
            &mut *self
                .open_channels
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for channel in channels {
            if channel.status().connected() {
                let _ = channel.close(200, "shutdown".into()).await;
            }
        }
    }
}

/// How draining a retired events queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Empty, with no other consumer: this worker removed it.
    Removed,
    /// It no longer exists: another worker removed it.
    Gone,
    /// Empty of what this worker took; other workers still consume it and remove it last.
    LeftToOthers,
    /// The worker stops, or pauses for an outage: it drains the queue again when it
    /// consumes again.
    Interrupted,
}

impl Drained {
    /// The queue no longer exists.
    pub fn is_gone(self) -> bool {
        matches!(self, Drained::Removed | Drained::Gone)
    }
}

/// A handler's verdict on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Its outcome is durable (or it was moved aside, or republished to be tried again):
    /// remove it from the queue.
    Ack,
    /// Its outcome could not be made durable because a dependency is down: hand it back to
    /// the broker at once (the consumers pause meanwhile).
    HandBack,
}

/// A handler that panics (a bug the pipeline's own guard did not catch) hands its message back;
/// the queue's delivery limit ends a loop. Left unsettled, its
/// delivery tag would stay open until the channel closes: its prefetch slot lost, and the ack
/// coalescer, which can only pass settled tags, keeping every later tag in memory.
async fn dispose_even_on_panic(handling: impl Future<Output = Disposition>) -> Disposition {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(handling).catch_unwind().await {
        Ok(disposition) => disposition,
        Err(_) => {
            tracing::error!("message handler panicked; handing the message back");
            Disposition::HandBack
        }
    }
}

/// The broker's answer for one delivery, sent once its handler is done: an ack, or a nack
/// that hands it back.
struct Acknowledgement {
    acker: Acker,
    tag: u64,
    acks: Acks,
    /// lapin closes a channel when its last handle is dropped, and `consume` returns on
    /// shutdown while handlers are still running: without this handle the channel closed
    /// under them and every message in flight at a graceful stop was handed back.
    _channel: lapin::Channel,
}

impl Acknowledgement {
    async fn send(self, disposition: Disposition) {
        match disposition {
            Disposition::Ack => self.acks.ack(self.tag, self.acker),
            // A nack, not a reject: from RabbitMQ 4.3 on, a requeueing nack does not count
            // against the queue's delivery limit, and an outage is not the message's fault.
            Disposition::HandBack => {
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                acks::report(self.acker.nack(requeue).await);
                // Only now, with the nack on the wire, may a `multiple` ack pass this tag.
                self.acks.nacked(self.tag);
            }
        }
    }
}
