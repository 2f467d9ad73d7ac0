//! LISTEN for webhook changes (the trigger of migration V2).

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};

use super::StorageError;

/// A dedicated connection LISTENing for webhook changes.
pub struct ChangeListener {
    /// Held so the session, and with it the LISTEN, stays open.
    _client: Client,
    /// Company ids whose webhooks changed. Closes when the connection is lost: everything
    /// cached since may be stale.
    pub changes: mpsc::UnboundedReceiver<String>,
}

pub async fn listen_for_changes(url: &str) -> Result<ChangeListener, StorageError> {
    let (client, mut connection) = super::tls::target(url)?.open().await?;
    let (sender, changes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(notification) = message
                && sender.send(notification.payload().to_owned()).is_err()
            {
                break;
            }
        }
    });
    client
        .batch_execute("LISTEN tesoro_webhooks_changed")
        .await?;
    Ok(ChangeListener {
        _client: client,
        changes,
    })
}
