//! The lock object: taking, waiting, releasing, force-unlocking, the
//! conditional-write probe, and a holder whose lock was broken.

use std::time::{Duration, Instant};

use prov_state::{LockInfo, S3Backend, S3Settings, StateBackend, StateDocument, StateError};

use crate::moto::*;
use crate::suite;

#[tokio::test]
async fn lock_put_meeting_its_own_earlier_put_is_held_by_us() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let info = LockInfo::for_this_process("apply");
    // The put that succeeded but whose response was lost: the SDK's retry
    // then meets it (412).
    raw_put(
        &client,
        &bucket,
        b.lock_key(),
        serde_json::to_vec_pretty(&info).unwrap(),
    )
    .await;
    let guard = b.lock(info.clone(), Duration::ZERO).await.unwrap();
    assert_eq!(*guard.info(), info);
    assert_eq!(b.lock_holder().await.unwrap(), Some(info.clone()));
    // Anyone else is refused, naming us.
    let err = b
        .lock(LockInfo::for_this_process("plan"), Duration::ZERO)
        .await
        .unwrap_err();
    let StateError::Locked { holder } = &err else {
        panic!("expected Locked, got {err}");
    };
    assert_eq!(**holder, info);
    // The lock works like any other: writes go through, unlock deletes it.
    guard.write(&suite::doc("l", 1, 1)).await.unwrap();
    guard.unlock().await.unwrap();
    assert_eq!(b.lock_holder().await.unwrap(), None);
    assert_eq!(raw_get(&client, &bucket, b.lock_key()).await, None);
}

/// A lock record left by a run on another machine that was killed.
fn ghost() -> LockInfo {
    LockInfo {
        id: uuid::Uuid::new_v4().to_string(),
        who: "ghost@elsewhere".into(),
        pid: 424_242,
        operation: "apply".into(),
        created: "2024-01-02T03:04:05Z".parse().unwrap(),
        version: "0.1.0".into(),
    }
}

#[tokio::test]
async fn stale_lock_is_reported_and_force_unlock_clears_it() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let stale = ghost();
    raw_put(
        &client,
        &bucket,
        b.lock_key(),
        serde_json::to_vec(&stale).unwrap(),
    )
    .await;
    let err = b
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap_err();
    let message = err.to_string();
    for part in [
        "state is locked by ghost@elsewhere (pid 424242) since 2024-01-02T03:04:05Z for `apply`",
        &format!("(lock id {})", stale.id),
        &format!("prov state force-unlock {}", stale.id),
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    let err = b.force_unlock("not-it").await.unwrap_err();
    assert!(matches!(err, StateError::LockMismatch { .. }), "{err}");
    assert_eq!(b.lock_holder().await.unwrap(), Some(stale.clone()));
    b.force_unlock(&stale.id).await.unwrap();
    assert_eq!(b.lock_holder().await.unwrap(), None);
    // Unlocking what is not locked is fine.
    b.force_unlock(&stale.id).await.unwrap();
    let guard = lock(&b, "apply").await;
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn unlock_never_deletes_someone_elses_lock() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let guard = lock(&b, "apply").await;
    // Our lock is force-unlocked, and someone else takes the lock.
    b.force_unlock(&guard.info().id).await.unwrap();
    let other = ghost();
    raw_put(
        &client,
        &bucket,
        b.lock_key(),
        serde_json::to_vec(&other).unwrap(),
    )
    .await;
    let err = guard.unlock().await.unwrap_err();
    assert!(matches!(err, StateError::LockLost { .. }), "{err}");
    assert!(err.to_string().contains(&other.id), "{err}");
    assert_eq!(b.lock_holder().await.unwrap(), Some(other));
}

#[tokio::test]
async fn unreadable_lock_object_is_locked_unknown() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    raw_put(&client, &bucket, b.lock_key(), b"not json".to_vec()).await;
    let err = b
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::LockedUnknown { .. }), "{err}");
    assert!(err.to_string().contains(b.lock_key()), "{err}");
    assert!(b.lock_holder().await.is_err());
}

#[tokio::test]
async fn two_backends_on_one_state_contend() {
    let (a, _) = rig().await;
    let b = backend(a.settings().clone()).await;
    let guard = lock(&a, "apply").await;
    let err = b
        .lock(LockInfo::for_this_process("plan"), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    guard.write(&suite::doc("l", 1, 1)).await.unwrap();
    guard.unlock().await.unwrap();
    let guard = lock(&b, "apply").await;
    assert_eq!(b.read().await.unwrap().map(|d| d.serial), Some(1));
    guard.write(&suite::doc("l", 2, 1)).await.unwrap();
    guard.unlock().await.unwrap();
    assert_eq!(a.read().await.unwrap().map(|d| d.serial), Some(2));
}

#[tokio::test]
async fn lock_timeout_waits_then_fails() {
    let (a, _) = rig().await;
    let b = backend(a.settings().clone()).await;
    let guard = lock(&a, "apply").await;
    let started = Instant::now();
    let err = b
        .lock(
            LockInfo::for_this_process("plan"),
            Duration::from_millis(1200),
        )
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    assert!(
        waited >= Duration::from_millis(1100),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn lock_timeout_succeeds_when_released_meanwhile() {
    let (a, _) = rig().await;
    let a = std::sync::Arc::new(a);
    let b = backend(a.settings().clone()).await;
    let guard = lock(&a, "apply").await;
    let releaser = {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            guard.unlock().await.unwrap();
        })
    };
    let guard = b
        .lock(LockInfo::for_this_process("plan"), Duration::from_secs(20))
        .await
        .unwrap();
    releaser.await.unwrap();
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn dropping_a_guard_releases_the_lock_in_the_background() {
    let (b, _) = rig().await;
    let guard = lock(&b, "apply").await;
    drop(guard);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.lock_holder().await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the dropped lock was not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_guard_on_a_multi_threaded_runtime_releases_at_once() {
    let (b, _) = rig().await;
    let guard = lock(&b, "apply").await;
    drop(guard);
    assert_eq!(b.lock_holder().await.unwrap(), None);
}

/// Real S3 creates an object with `If-None-Match: *` atomically, and the lock
/// relies on it: of many lockers racing for a free lock, exactly one holds
/// it. (moto 5.2's check-then-put is not atomic across its threads; the
/// test peer `scripts/lib/moto-server` makes it so, as S3 is.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_lockers_at_once_exactly_one_holds_thirty_rounds() {
    const LOCKERS: usize = 16;
    const ROUNDS: usize = 30;
    let (first, _) = rig().await;
    let mut backends = vec![first];
    for _ in 1..LOCKERS {
        backends.push(backend(backends[0].settings().clone()).await);
    }
    let backends = std::sync::Arc::new(backends);
    for round in 0..ROUNDS {
        let tasks: Vec<_> = (0..LOCKERS)
            .map(|i| {
                let backends = std::sync::Arc::clone(&backends);
                tokio::spawn(async move {
                    let result = backends[i]
                        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
                        .await;
                    (i, result)
                })
            })
            .collect();
        let mut held = Vec::new();
        for task in tasks {
            let (i, result) = task.await.unwrap();
            match result {
                Ok(guard) => held.push((i, guard)),
                Err(StateError::Locked { .. }) => {}
                Err(other) => panic!("round {round}, locker {i}: {other}"),
            }
        }
        let holders: Vec<usize> = held.iter().map(|(i, _)| *i).collect();
        assert_eq!(holders.len(), 1, "round {round}: holders {holders:?}");
        for (_, guard) in held {
            guard.unlock().await.unwrap();
        }
    }
}

/// state-hardening 10: nothing checked that the endpoint honours
/// conditional writes; on one that ignores them two runs both "hold" the
/// lock. The first lock now probes, and refuses such an endpoint, naming
/// it, leaving no lock behind.
#[tokio::test]
async fn an_endpoint_that_ignores_conditional_writes_is_refused_at_the_first_lock() {
    let lax = spawn_moto("--ignore-conditions");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .endpoint_url(&lax.endpoint)
        .load()
        .await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let bucket = new_bucket(&client).await;
    let mut lax_settings = S3Settings::new(&bucket, "demo/state.json");
    lax_settings.endpoint = Some(lax.endpoint.clone());
    lax_settings.region = Some("us-east-1".to_owned());
    let b = S3Backend::from_sdk_config(lax_settings, &config).unwrap();
    let err = b
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StateError::NoConditionalWrites { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&lax.endpoint), "{err}");
    assert!(
        raw_get(&client, &bucket, "demo/state.json.lock")
            .await
            .is_none(),
        "the lock was released"
    );

    // The same probe passes on an endpoint that keeps S3's promise.
    let (good, _) = rig().await;
    let guard = lock(&good, "apply").await;
    guard.unlock().await.unwrap();
}

/// state-hardening 10: a holder whose lock was force-unlocked went on
/// writing. Every write and lock check now looks at the lock object first.
#[tokio::test]
async fn a_holder_whose_lock_was_force_unlocked_stops_before_writing() {
    let (a, _client) = rig().await;
    let guard = lock(&a, "apply").await;
    let mut doc = StateDocument::new("demo");
    doc.set_serial(1);
    guard.write(&doc).await.unwrap();
    guard.check().await.unwrap();

    let b = backend(a.settings().clone()).await;
    b.force_unlock(&guard.info().id).await.unwrap();
    doc.set_serial(2);
    let err = guard.write(&doc).await.unwrap_err();
    assert!(matches!(err, StateError::LockGone { .. }), "{err}");
    assert!(err.to_string().contains("nobody holds it"), "{err}");
    let err = guard.check().await.unwrap_err();
    assert!(matches!(err, StateError::LockGone { .. }), "{err}");

    let theirs = lock(&b, "apply").await;
    let err = guard.write(&doc).await.unwrap_err();
    assert!(err.to_string().contains("now locked by"), "{err}");
    assert_eq!(
        b.read().await.unwrap().unwrap().serial,
        1,
        "nothing of A's landed"
    );
    theirs.unlock().await.unwrap();
}
