//! The S3 backend against a real moto server: the shared suite (a fresh bucket
//! per test) plus compare-and-swap, lock and history properties.
//!
//! One moto server serves the whole test binary (`MOTO_SERVER` overrides the
//! `moto_server` program); it is stopped when the binary exits.

//!
//! Modules: [`moto`] (the server and helpers), [`writes`] (layout and
//! compare-and-swap), [`locking`] (the lock object), [`history`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../suite/mod.rs"]
mod suite;

mod history;
mod locking;
mod moto;
mod writes;

use moto::fresh;

state_backend_suite!(fresh);

#[tokio::test]
async fn suite_runs_in_sequence() {
    suite::run_all(fresh).await;
}

#[tokio::test]
async fn environments_live_under_the_key_and_leave_nothing_when_removed() {
    let client = moto::raw_client().await;
    let bucket = moto::new_bucket(&client).await;
    let settings = moto::settings(&bucket);
    let base = moto::backend(settings.clone()).await;
    let a = moto::backend(settings.for_environment("a")).await;
    let b = moto::backend(settings.for_environment("b")).await;
    suite::environments_are_apart_listed_and_removed(&base, &a, &b).await;
    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort_unstable();
    assert!(
        keys.iter().all(|k| k.starts_with("demo/state.json.envs/")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"demo/state.json.envs/b/state.json"),
        "{keys:?}"
    );
}
