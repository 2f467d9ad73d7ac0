//! The routing cache: each company's webhooks, loaded once however many events miss at once.

use std::sync::Arc;

use futures_util::future::join_all;
use tesoro_webhooks::{domain::CompanyId, pipeline::Subscriptions};
use tokio_util::sync::CancellationToken;

use crate::harness::{TestDatabase, wait_until};

#[tokio::test]
async fn events_that_miss_together_share_one_load() {
    let db = TestDatabase::create().await;
    let subscriptions = Arc::new(Subscriptions::new(db.storage.clone()));
    let stop = CancellationToken::new();
    let following = {
        let (subscriptions, url, stop) = (subscriptions.clone(), db.url.clone(), stop.clone());
        tokio::spawn(async move { subscriptions.follow_changes(&url, stop).await })
    };
    wait_until("changes to be followed", || async {
        subscriptions.is_listening().then_some(())
    })
    .await;

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
