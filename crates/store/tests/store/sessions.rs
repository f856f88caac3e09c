//! Sessions in Redis: shared by every replica, revocable one by one or all at once.

use portcullis_core::Policy;
use portcullis_store::SessionStore;
use portcullis_testkit::redis::TestRedis;

use crate::helpers::redis_store;

#[tokio::test]
async fn a_session_created_through_one_replica_is_seen_and_revoked_through_another() {
    let redis = TestRedis::start().await;
    let policy = Policy::default();
    let a = redis_store(vec![redis.url.clone()], false, &redis.prefix, &policy, None);
    let b = redis_store(vec![redis.url.clone()], false, &redis.prefix, &policy, None);
    let created = a.create("digest-1", "acct-1", 60_000).await.unwrap();
    assert_eq!(b.get("digest-1").await.unwrap(), Some(created));
    assert!(b.revoke("digest-1").await.unwrap());
    assert_eq!(a.get("digest-1").await.unwrap(), None);
    assert!(!a.revoke("digest-1").await.unwrap());
    redis.cleanup().await;
}

#[tokio::test]
async fn logging_out_everywhere_ends_every_session_of_the_account_only() {
    let redis = TestRedis::start().await;
    let store = redis_store(
        vec![redis.url.clone()],
        false,
        &redis.prefix,
        &Policy::default(),
        None,
    );
    for digest in ["d1", "d2", "d3"] {
        store.create(digest, "acct", 60_000).await.unwrap();
    }
    store.create("other", "acct-2", 60_000).await.unwrap();
    assert_eq!(store.revoke_all("d2").await.unwrap(), 3);
    for digest in ["d1", "d2", "d3"] {
        assert_eq!(store.get(digest).await.unwrap(), None);
    }
    assert!(store.get("other").await.unwrap().is_some());
    let mut conn = redis.connection().await;
    for key in redis.keys().await {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no TTL");
    }
    redis.cleanup().await;
}
