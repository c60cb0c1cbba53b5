//! `ConnectionLimiter`: caps, RAII release, concurrency and cancellation.

use std::sync::Arc;
use std::time::Duration;

use decnet_auth::{ConnectionLimiter, LimitError};
use tokio::sync::{Barrier, oneshot};

#[test]
fn per_user_cap() {
    let limiter = ConnectionLimiter::new(2, None);
    let a = limiter.try_acquire("alice").expect("1st");
    let b = limiter.try_acquire("alice").expect("2nd");
    assert_eq!(
        limiter.try_acquire("alice").map(drop),
        Err(LimitError::PerUser { limit: 2 })
    );
    // Other users are unaffected.
    let c = limiter.try_acquire("bob").expect("bob");
    assert_eq!(limiter.active_for("alice"), 2);
    assert_eq!(limiter.active_for("bob"), 1);
    assert_eq!(limiter.active(), 3);
    drop((a, b, c));
}

#[test]
fn global_cap() {
    let limiter = ConnectionLimiter::new(5, Some(3));
    let slots: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|user| limiter.try_acquire(user).expect("slot"))
        .collect();
    assert_eq!(
        limiter.try_acquire("d").map(drop),
        Err(LimitError::Global { limit: 3 })
    );
    drop(slots);
    assert!(limiter.try_acquire("d").is_ok());
}

#[test]
fn release_on_drop() {
    let limiter = ConnectionLimiter::new(1, Some(1));
    let slot = limiter.try_acquire("alice").expect("slot");
    assert_eq!(slot.user_uuid(), "alice");
    assert!(limiter.try_acquire("alice").is_err());
    drop(slot);
    assert_eq!(limiter.active(), 0);
    assert_eq!(limiter.active_for("alice"), 0);
    assert_eq!(limiter.users(), 0, "no zero entries are kept");
    let again = limiter.try_acquire("alice").expect("slot after release");
    drop(again);
}

#[test]
fn clones_share_counts() {
    let limiter = ConnectionLimiter::new(1, None);
    let clone = limiter.clone();
    let slot = limiter.try_acquire("alice").expect("slot");
    assert_eq!(clone.active_for("alice"), 1);
    assert!(clone.try_acquire("alice").is_err());
    drop(slot);
    assert!(clone.try_acquire("alice").is_ok());
}

#[test]
fn map_does_not_grow_with_distinct_users() {
    let limiter = ConnectionLimiter::new(1, None);
    for i in 0..10_000 {
        let slot = limiter.try_acquire(&format!("user-{i}")).expect("slot");
        drop(slot);
    }
    assert_eq!(limiter.users(), 0);
    assert_eq!(limiter.active(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_acquire_and_release_returns_to_zero() {
    let per_user = 3;
    let limiter = ConnectionLimiter::new(per_user, Some(40));
    let barrier = Arc::new(Barrier::new(64));
    let mut tasks = Vec::new();
    for t in 0..64 {
        let limiter = limiter.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let user = format!("user-{}", t % 8);
            let mut granted = 0;
            for _ in 0..200 {
                if let Ok(slot) = limiter.try_acquire(&user) {
                    granted += 1;
                    assert!(limiter.active_for(&user) <= per_user);
                    assert!(limiter.active() <= 40);
                    tokio::task::yield_now().await;
                    drop(slot);
                }
            }
            granted
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    assert!(total > 0);
    assert_eq!(limiter.active(), 0);
    assert_eq!(limiter.users(), 0);
}

#[tokio::test]
async fn aborted_task_releases_its_slot() {
    let limiter = ConnectionLimiter::new(1, None);
    let (held_tx, held_rx) = oneshot::channel();
    let task = {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            let _slot = limiter.try_acquire("alice").expect("slot");
            let _ = held_tx.send(());
            // A stream that would run forever.
            std::future::pending::<()>().await;
        })
    };
    held_rx.await.expect("slot taken");
    assert_eq!(limiter.active_for("alice"), 1);
    task.abort();
    let joined = task.await;
    assert!(joined.is_err_and(|e| e.is_cancelled()));
    assert_eq!(limiter.active_for("alice"), 0);
    assert_eq!(limiter.users(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_future_releases_its_slot() {
    // Cancellation by dropping (what hyper does to a body when the client
    // goes away), not by aborting a task.
    let limiter = ConnectionLimiter::new(1, None);
    let stream = {
        let limiter = limiter.clone();
        async move {
            let _slot = limiter.try_acquire("alice").expect("slot");
            tokio::time::sleep(Duration::from_secs(3_600)).await;
        }
    };
    let timed_out = tokio::time::timeout(Duration::from_secs(1), stream).await;
    assert!(timed_out.is_err());
    assert_eq!(limiter.active(), 0);
}
