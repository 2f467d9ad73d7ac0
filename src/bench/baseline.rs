//! The ceiling: a bare consume → POST → ack loop with the same broker, receiver and HTTP client
//! settings as the worker, and nothing else (no routing, signing or database).

use std::sync::Arc;

use anyhow::Context;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    app,
    broker::{AckMode, Broker, Disposition},
    config::Config,
    sender::Sender,
};

/// Consumes `queue` and POSTs each body to `url` until killed.
pub async fn run(config: &Config, queue: &str, url: &str) -> anyhow::Result<()> {
    let sender = Arc::new(Sender::new(&config.delivery)?);
    let broker = Broker::connect(&config.amqp.url, app::topology(config))
        .await
        .context("connecting to the broker")?;
    let url: Arc<str> = url.into();
    let tracker = TaskTracker::new();
    let never = CancellationToken::new();
    broker
        .consume(
            queue,
            config.amqp.prefetch,
            AckMode::Each,
            &never,
            &tracker,
            || {},
            move |message| {
                let sender = sender.clone();
                let url = url.clone();
                async move {
                    let id = message.message_id().unwrap_or_default().to_owned();
                    sender.post_plain(&url, &id, message.body).await;
                    Disposition::Ack
                }
            },
        )
        .await?;
    Ok(())
}
