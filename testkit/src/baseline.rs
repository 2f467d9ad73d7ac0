//! The ceiling: a bare consume → POST → ack loop on the same broker and receiver as the worker,
//! with an HTTP client set up as the worker's is, and nothing else (no routing, signing,
//! database or ack coalescing).

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};

use crate::amqp;

/// The worker's delivery timeout by default.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Consumes `queue` (at most `prefetch` unacked) and POSTs each body to `url` with its
/// message id as `webhook-id`, acking each message once its POST is answered, until the
/// connection ends or the process is killed.
pub async fn run(amqp_urls: &str, queue: &str, url: &str, prefetch: u16) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .no_proxy()
        .build()?;
    let client = amqp::Client::connect(amqp_urls).await?;
    let channel = client.connection.create_channel().await?;
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
    let url: Arc<str> = url.into();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_default();
            let sent = http
                .post(&*url)
                .header("webhook-id", id)
                .header("content-type", "application/json")
                .body(delivery.data)
                .send()
                .await;
            if let Ok(response) = sent {
                let _ = response.bytes().await;
            }
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        });
    }
    Ok(())
}
