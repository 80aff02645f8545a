//! Pause points for crash-safety tests.
//!
//! `PROV_TEST_PAUSE_AT=NAME:N` makes the N-th arrival at the point `NAME`
//! print `prov: paused at NAME N (pid P)` to stderr and sleep for
//! `PROV_TEST_PAUSE_SECS` (default 60) before going on — long enough for a
//! test to SIGKILL the process at exactly that point, or to start a competing
//! run. Unset, a point costs one relaxed atomic load.
//!
//! Points: `before-create` (intent saved, provider not yet called),
//! `after-create` (provider returned, result not yet saved), and the same
//! pairs `before-update`/`after-update` and `before-delete`/`after-delete`;
//! inside providers: `ec2-stopped` (an EC2 update stopped and changed the
//! instance and has not started it again).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

struct Config {
    name: String,
    nth: u64,
    pause: Duration,
    count: AtomicU64,
}

fn config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let value = std::env::var("PROV_TEST_PAUSE_AT").ok()?;
            let (name, nth) = value.split_once(':')?;
            let pause = std::env::var("PROV_TEST_PAUSE_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(60);
            Some(Config {
                name: name.to_owned(),
                nth: nth.parse().ok()?,
                pause: Duration::from_secs(pause),
                count: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Marks arrival at the point `name`; pauses when the test asked for it.
pub async fn reached(name: &str) {
    let Some(config) = config() else {
        return;
    };
    if config.name != name {
        return;
    }
    let n = config.count.fetch_add(1, Ordering::SeqCst) + 1;
    if n == config.nth {
        eprintln!("prov: paused at {name} {n} (pid {})", std::process::id());
        tokio::time::sleep(config.pause).await;
    }
}
