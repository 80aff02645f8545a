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
