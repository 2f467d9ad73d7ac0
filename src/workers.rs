//! The live workers: each beats every few seconds in the database, and learns how many are
//! live and its place in their order, by which they split each webhook's rate limit
//! ([`crate::pipeline::rate`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{domain::Membership, storage::Storage};

/// The membership kept by the heartbeat and read by every rate-limited attempt: both numbers
/// in one word, so they are always read together.
#[derive(Debug)]
pub struct SharedMembership(AtomicU64);

impl Default for SharedMembership {
    fn default() -> Self {
        let shared = Self(AtomicU64::new(0));
        shared.set(Membership::ALONE);
        shared
    }
}

impl SharedMembership {
    pub fn get(&self) -> Membership {
        let word = self.0.load(Ordering::Relaxed);
        Membership {
            live: (word >> 32) as usize,
            rank: (word & u64::from(u32::MAX)) as usize,
        }
    }

    pub fn set(&self, membership: Membership) {
        let live = u32::try_from(membership.live.max(1)).unwrap_or(u32::MAX);
        let rank = u32::try_from(membership.rank)
            .unwrap_or(u32::MAX)
            .min(live - 1);
        self.0
            .store(u64::from(live) << 32 | u64::from(rank), Ordering::Relaxed);
    }
}

/// How often a worker beats; one silent for three beats no longer counts.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Beats until `stop`, keeping `membership` current; then leaves, so the others take its share
/// at their next beat.
pub async fn heartbeat(
    storage: Storage,
    membership: Arc<SharedMembership>,
    stop: CancellationToken,
) {
    let id = Uuid::now_v7();
    loop {
        match storage.heartbeat(id, 3 * HEARTBEAT_EVERY).await {
            Ok(current) => membership.set(current),
            Err(e) => tracing::debug!(error = %e, "heartbeat failed; keeping the last count"),
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
        }
    }
    if let Err(e) = storage.leave(id).await {
        tracing::debug!(error = %e, "cannot leave the workers table; the row ages out");
    }
}
