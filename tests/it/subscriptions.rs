//! The routing cache: each company's webhooks, loaded once however many events miss at once.

use std::sync::Arc;

use futures_util::future::join_all;
use tesoro_webhooks::{domain::CompanyId, pipeline::Subscriptions};
use tokio_util::sync::CancellationToken;

use crate::harness::{TestDatabase, wait_until};

/// Starts following `db`'s webhook changes, so the cache is in use; cancel the token to stop.
async fn follow_changes(
    subscriptions: &Arc<Subscriptions>,
    db: &TestDatabase,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let following = {
        let (subscriptions, url, stop) = (subscriptions.clone(), db.url.clone(), stop.clone());
        tokio::spawn(async move { subscriptions.follow_changes(&url, stop).await })
    };
    wait_until("changes to be followed", || async {
        subscriptions.is_listening().then_some(())
    })
    .await;
    (stop, following)
}

#[tokio::test]
async fn events_that_miss_together_share_one_load() {
    let db = TestDatabase::create().await;
    let subscriptions = Arc::new(Subscriptions::new(db.storage.clone()));
    let (stop, following) = follow_changes(&subscriptions, &db).await;

    // As after a restart with a backlog: many events of one company, none of them cached.
    let company = CompanyId::parse("cmp_single_flight").expect("company");
    let loads = join_all((0..20).map(|_| subscriptions.of_company(&company))).await;
    let loaded: Vec<_> = loads.into_iter().map(|l| l.expect("load")).collect();
    assert!(
        loaded.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])),
        "each event ran its own query"
    );
    // And the next event is served from the cache.
    let cached = subscriptions.of_company(&company).await.expect("cached");
    assert!(Arc::ptr_eq(&cached, &loaded[0]));

    stop.cancel();
    following.await.expect("follower stops");
}

/// Ids on the bus are the CRM's (or anyone's): a flood of companies without webhooks cycles
/// through the cache, which keeps the most recently routed and never grows past its bound.
#[tokio::test]
async fn the_cache_is_bounded_whatever_company_ids_arrive() {
    let db = TestDatabase::create().await;
    let subscriptions = Arc::new(Subscriptions::with_capacity(db.storage.clone(), 50));
    let (stop, following) = follow_changes(&subscriptions, &db).await;

    let busy = CompanyId::parse("cmp_busy").expect("company");
    let first = subscriptions.of_company(&busy).await.expect("load");
    for n in 0..500 {
        let unknown = CompanyId::parse(format!("cmp_unknown_{n}")).expect("company");
        subscriptions.of_company(&unknown).await.expect("load");
        assert!(
            subscriptions.cached_companies() <= 50,
            "past the bound after {n}"
        );
        if n % 10 == 0 {
            // Routed often, so never the least recently used.
            let again = subscriptions.of_company(&busy).await.expect("cached");
            assert!(
                Arc::ptr_eq(&again, &first),
                "the busy company stayed cached"
            );
        }
    }
    assert_eq!(subscriptions.cached_companies(), 50);

    stop.cancel();
    following.await.expect("follower stops");
}
