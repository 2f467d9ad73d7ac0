//! Each company's webhooks, cached for routing and dropped when PostgreSQL notifies a change,
//! so routing an event costs no query. While the LISTEN connection is down the cache is not
//! used at all: correctness never depends on a notification arriving.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::{
    domain::CompanyId,
    storage::{Storage, StorageError, Webhook, listen_for_changes},
};

const RELISTEN_PAUSE: Duration = Duration::from_secs(1);

pub struct Subscriptions {
    storage: Storage,
    cache: RwLock<HashMap<CompanyId, Arc<[Webhook]>>>,
    /// Bumped by every invalidation; a load that started before one is not cached, so a
    /// change that lands during a load cannot leave stale webhooks behind.
    generation: AtomicU64,
    /// True while the LISTEN connection is up: only then may the cache be trusted.
    listening: AtomicBool,
}

impl Subscriptions {
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            cache: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        }
    }

    /// The company's webhooks, from the cache when it can be trusted.
    pub async fn of_company(&self, company: &CompanyId) -> Result<Arc<[Webhook]>, StorageError> {
        let trusted = self.listening.load(Ordering::Acquire);
        if trusted && let Some(hit) = self.cache.read().ok().and_then(|c| c.get(company).cloned()) {
            return Ok(hit);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let loaded: Arc<[Webhook]> = self.storage.company_webhooks(company).await?.into();
        if trusted
            && let Ok(mut cache) = self.cache.write()
            && self.generation.load(Ordering::Acquire) == generation
        {
            cache.insert(company.clone(), loaded.clone());
        }
        Ok(loaded)
    }

    /// Drops one company's entry, or everything.
    pub fn invalidate(&self, company: Option<&str>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut cache) = self.cache.write() {
            match company.and_then(|c| CompanyId::parse(c).ok()) {
                Some(company) => {
                    cache.remove(&company);
                }
                None => cache.clear(),
            }
        }
    }

    /// Follows webhook changes until `shutdown`, reconnecting the LISTEN when it drops.
    pub async fn follow_changes(&self, database_url: &str, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match listen_for_changes(database_url).await {
                Ok(mut listener) => {
                    self.invalidate(None);
                    self.listening.store(true, Ordering::Release);
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            change = listener.changes.recv() => match change {
                                Some(company) => self.invalidate(Some(&company)),
                                None => break,
                            },
                        }
                    }
                    self.listening.store(false, Ordering::Release);
                    self.invalidate(None);
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for webhook changes"),
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(RELISTEN_PAUSE) => {}
            }
        }
    }
}
