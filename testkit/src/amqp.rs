//! RabbitMQ without the product's topology: a connection to the first node that answers, a
//! raw publisher, and the benchmark's tap (an exchange and a quorum queue bound to all of it).

use std::future::Future;

use anyhow::{Context, bail};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
        QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};

const PERSISTENT: u8 = 2;

/// How long connecting to one node (TCP and the AMQP handshake) may take before the next is
/// tried: a node can accept connections and never answer them.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection to the broker.
pub struct Client {
    pub(crate) connection: Connection,
}

impl Client {
    /// Connects to the first node of `urls` (comma-separated, as `amqp.url`) that answers
    /// within [`CONNECT_TIMEOUT`].
    pub async fn connect(urls: &str) -> anyhow::Result<Self> {
        let mut last_error = None;
        for url in urls.split(',').map(str::trim) {
            let connecting = Connection::connect(url, ConnectionProperties::default());
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(Ok(connection)) => return Ok(Self { connection }),
                Ok(Err(e)) => last_error = Some(anyhow::Error::from(e)),
                Err(_) => {
                    last_error = Some(anyhow::anyhow!(
                        "a node did not complete the connection within {CONNECT_TIMEOUT:?}"
                    ));
                }
            }
        }
        match last_error {
            Some(e) => Err(e).context("no broker node answers"),
            None => bail!("no broker node named"),
        }
    }

    /// A publisher on a confirm-mode channel of its own.
    pub async fn publisher(&self) -> anyhow::Result<RawPublisher> {
        let channel = self.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(RawPublisher { channel })
    }

    /// A durable topic exchange and a quorum queue bound to all of it with `#`.
    pub async fn declare_tap(&self, exchange: &str, queue: &str) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        declare_tap(&channel, exchange, queue).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Deletes what `declare_tap` made.
    pub async fn delete_tap(&self, exchange: &str, queue: &str) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await?;
        channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await?;
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }

    /// Deletes `queue` (nothing when it does not exist).
    pub async fn delete_queue(&self, queue: &str) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await?;
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }

    /// A durable quorum queue bound to `exchange` (which must exist) with `#`.
    pub async fn bind_queue(&self, exchange: &str, queue: &str) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        declare_bound_queue(&channel, exchange, queue).await?;
        let _ = channel.close(200, "bound".into()).await;
        Ok(())
    }

    pub async fn close(&self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// Publishes any bytes to any exchange on a confirm-mode channel of its own.
#[derive(Clone)]
pub struct RawPublisher {
    channel: Channel,
}

impl RawPublisher {
    /// Sends `body` (persistent, `message_id` if given) without waiting: the returned future
    /// resolves with the broker's confirm, so a caller can keep many outstanding. A message
    /// no queue takes is an error.
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: Option<&str>,
        body: &[u8],
    ) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + use<>> {
        let mut properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
        if let Some(id) = message_id {
            properties = properties
                .with_message_id(id.into())
                .with_content_type("application/json".into());
        }
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await?;
        let target = format!("{exchange}/{routing_key}");
        Ok(async move {
            match confirm.await? {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_)) => bail!("no queue took the message sent to {target}"),
                _ => bail!("the broker refused the message sent to {target}"),
            }
        })
    }

    /// Publishes `body` and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: Option<&str>,
        body: &[u8],
    ) -> anyhow::Result<()> {
        self.send(exchange, routing_key, message_id, body)
            .await?
            .await
    }
}

async fn declare_tap(channel: &Channel, exchange: &str, queue: &str) -> lapin::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    declare_bound_queue(channel, exchange, queue).await
}

/// A durable quorum queue bound to `exchange` with `#`.
async fn declare_bound_queue(channel: &Channel, exchange: &str, queue: &str) -> lapin::Result<()> {
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            quorum,
        )
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
