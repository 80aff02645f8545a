//! Ctrl-C and SIGTERM: stop cleanly instead of dying with the lock held.
//!
//! [`install`] replaces the default "kill the process" with three levels:
//! - the first signal sets [`Level::Stopping`]: commands stop starting new
//!   work, let calls in flight finish, save state and release the lock;
//! - [`GRACE`] later, or at a second signal, [`Level::Abandoning`]: calls
//!   still in flight are abandoned (a create stays recorded as `creating`
//!   with its idempotency token, so the next run finds its object);
//! - a third signal exits at once, saying how to release a lock left behind.
//!
//! A command that stopped because of a signal returns [`Interrupted`], and
//! `main` exits with [`EXIT_INTERRUPTED`] (130, the shell's 128 + SIGINT).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::watch;

/// Exit code after an interruption.
pub const EXIT_INTERRUPTED: u8 = 130;

/// How long calls in flight may run on after the first signal.
pub const GRACE: Duration = Duration::from_secs(5);

/// How far the interruption has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No signal received.
    Running,
    /// Finish what runs, start nothing new.
    Stopping,
    /// Abandon what still runs; save and release the lock.
    Abandoning,
}

/// The command stopped because it was interrupted.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted: stopped before finishing (nothing new was started after the signal)")]
pub struct Interrupted;

fn channel() -> &'static watch::Sender<Level> {
    static LEVEL: OnceLock<watch::Sender<Level>> = OnceLock::new();
    LEVEL.get_or_init(|| watch::channel(Level::Running).0)
}

/// The current level.
#[must_use]
pub fn level() -> Level {
    *channel().borrow()
}

/// Whether a signal was received.
#[must_use]
pub fn requested() -> bool {
    level() >= Level::Stopping
}

/// `Err(Interrupted)` once a signal was received.
///
/// # Errors
/// When a signal was received.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Resolves once the level reaches `at_least` (at once if it has).
pub async fn reached(at_least: Level) {
    let mut rx = channel().subscribe();
    // `wait_for` fails only when the sender is gone, and it is a static.
    let _ = rx.wait_for(|level| *level >= at_least).await;
}

/// Resolves at the first signal.
pub async fn stopping() {
    reached(Level::Stopping).await;
}

/// Resolves when calls in flight are to be abandoned.
pub async fn abandoning() {
    reached(Level::Abandoning).await;
}

/// Runs `work` unless a signal arrives first, in which case `work` is dropped.
/// Only for work that is safe to drop at any await point (reads, waits).
///
/// # Errors
/// [`Interrupted`] when a signal arrived first.
pub async fn unless_stopping<T>(
    work: impl std::future::Future<Output = T>,
) -> Result<T, Interrupted> {
    tokio::select! {
        done = work => Ok(done),
        () = stopping() => Err(Interrupted),
    }
}

fn raise(to: Level) {
    channel().send_if_modified(|level| {
        if *level < to {
            *level = to;
            true
        } else {
            false
        }
    });
}

/// Listens for SIGINT and SIGTERM for the rest of the process. Call once,
/// inside the runtime, before any work that holds state.
///
/// # Errors
/// When the signal handlers cannot be registered.
pub fn install() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let mut received = 0u32;
        loop {
            let name = tokio::select! {
                Some(()) = int.recv() => "SIGINT",
                Some(()) = term.recv() => "SIGTERM",
                else => return,
            };
            received += 1;
            tracing::info!(signal = name, received, "signal received");
            match received {
                1 => {
                    eprintln!(
                        "\nprov: {name} received; stopping: nothing new starts, work in flight \
                         gets {}s to finish, then state is saved and the lock released \
                         (press Ctrl-C again to abandon work in flight now)",
                        GRACE.as_secs()
                    );
                    raise(Level::Stopping);
                    tokio::spawn(async {
                        tokio::time::sleep(GRACE).await;
                        raise(Level::Abandoning);
                    });
                }
                2 => {
                    eprintln!("\nprov: {name} again; abandoning work in flight, saving state");
                    raise(Level::Abandoning);
                }
                _ => {
                    eprintln!(
                        "\nprov: {name} a third time; exiting now. If the state lock is left, \
                         release it with `prov state force-unlock ID` (see `prov plan`)."
                    );
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
            }
        }
    });
    Ok(())
}
