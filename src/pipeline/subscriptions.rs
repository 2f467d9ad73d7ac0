//! Each company's webhooks, cached for routing and dropped when PostgreSQL notifies a change,
//! so routing an event costs no query. While the LISTEN connection is down the cache is not
//! used at all: correctness never depends on a notification arriving.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use lru::LruCache;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::CompanyId,
    storage::{Storage, StorageError, Webhook, listen_for_changes},
};

const RELISTEN_PAUSE: Duration = Duration::from_secs(1);
/// Companies whose webhooks are kept, the least recently routed dropped first: most
/// companies' entries are empty (no webhooks), about 100 bytes each, so at most ~5 MB
/// whatever ids arrive on the bus (a flood of unknown ones cycles through the cache instead
/// of growing it).
pub const CACHED_COMPANIES: usize = 50_000;

type Webhooks = Arc<[Webhook]>;
/// One query for a company's webhooks, awaited by every event that missed the cache while it
/// ran: a restart with a backlog, or a change to a busy company's webhooks, costs one query
/// per company instead of one per event in flight.
type Load = Shared<BoxFuture<'static, Result<Webhooks, Arc<StorageError>>>>;

enum Entry {
    Loaded(Webhooks),
    Loading(Load),
}

pub struct Subscriptions {
    storage: Storage,
    /// Never held across an await. An invalidation (or an eviction) removes the entry, so a
    /// load that started before a change still answers the events that awaited it but is not
    /// kept.
    cache: Mutex<LruCache<CompanyId, Entry>>,
    /// Entries kept at most. Enforced here rather than by `LruCache::new`, which would
    /// allocate a table for all of them up front.
    capacity: usize,
    /// True while the LISTEN connection is up: only then may the cache be trusted.
    listening: AtomicBool,
}

impl Subscriptions {
    pub fn new(storage: Storage) -> Self {
        Self::with_capacity(storage, CACHED_COMPANIES)
    }

    /// A cache of at most `companies` entries (at least one).
    pub fn with_capacity(storage: Storage, companies: usize) -> Self {
        Self {
            storage,
            cache: Mutex::new(LruCache::unbounded()),
            capacity: companies.max(1),
            listening: AtomicBool::new(false),
        }
    }

    /// Companies whose entry is cached (or loading).
    pub fn cached_companies(&self) -> usize {
        self.lock().len()
    }

    /// True while changes are followed, so the cache is in use.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// The company's webhooks, from the cache when it can be trusted.
    pub async fn of_company(&self, company: &CompanyId) -> Result<Webhooks, StorageError> {
        if !self.is_listening() {
            return Ok(self.storage.company_webhooks(company).await?.into());
        }
        let load = match self.cached_or_loading(company) {
            Entry::Loaded(hit) => return Ok(hit),
            Entry::Loading(load) => load,
        };
        let loaded = load.clone().await;
        let mut cache = self.lock();
        if let Some(Entry::Loading(current)) = cache.get(company)
            && current.ptr_eq(&load)
        {
            match &loaded {
                Ok(webhooks) => {
                    cache.put(company.clone(), Entry::Loaded(webhooks.clone()));
                    self.evict_past_capacity(&mut cache);
                }
                // The next event tries again.
                Err(_) => {
                    cache.pop(company);
                }
            }
        }
        loaded.map_err(StorageError::Shared)
    }

    /// The cached webhooks, or the load in flight for them (started here if there is none).
    fn cached_or_loading(&self, company: &CompanyId) -> Entry {
        let mut cache = self.lock();
        match cache.get(company) {
            Some(Entry::Loaded(hit)) => Entry::Loaded(hit.clone()),
            Some(Entry::Loading(load)) => Entry::Loading(load.clone()),
            None => {
                let storage = self.storage.clone();
                let owned = company.clone();
                // A panic inside a Shared future poisons it: every later poll panics, and a
                // waiter parked meanwhile is never woken. Caught here, it is an error like
                // any other, shared by the waiters and not cached.
                let load = AssertUnwindSafe(async move { storage.company_webhooks(&owned).await })
                    .catch_unwind()
                    .map(|loaded| match loaded {
                        Ok(Ok(webhooks)) => Ok(Webhooks::from(webhooks)),
                        Ok(Err(e)) => Err(Arc::new(e)),
                        Err(_) => Err(Arc::new(StorageError::Corrupt(
                            "loading a company's webhooks panicked".into(),
                        ))),
                    })
                    .boxed()
                    .shared();
                cache.put(company.clone(), Entry::Loading(load.clone()));
                self.evict_past_capacity(&mut cache);
                Entry::Loading(load)
            }
        }
    }

    fn evict_past_capacity(&self, cache: &mut LruCache<CompanyId, Entry>) {
        while cache.len() > self.capacity {
            cache.pop_lru();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<CompanyId, Entry>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops one company's entry, or everything.
    pub fn invalidate(&self, company: Option<&str>) {
        let mut cache = self.lock();
        match company.and_then(|c| CompanyId::parse(c).ok()) {
            Some(company) => {
                cache.pop(&company);
            }
            None => cache.clear(),
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
