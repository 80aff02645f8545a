//! Logging setup: `tracing` to stderr, filtered by `PROV_LOG`, stepping
//! around the live progress lines, and quiet on a thread that is ending.
//!
//! Why quiet: a value dropped while a thread's thread-locals are being torn
//! down (sled's buffers, freed late by crossbeam's epoch collector when a
//! worker thread exits) may log, and tracing-subscriber's formatter and
//! registry then reach thread-locals of their own that are already gone:
//! the process aborts ("cannot access a Thread Local Storage value during
//! or after destruction"), after the command's work is done but with a
//! failed exit (tokio-rs/tracing#3239). The runtime marks each of its
//! threads as ending before it exits ([`thread_ending`]), and from then on
//! that thread's events are dropped before they reach the subscriber.

use std::cell::Cell;

use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use super::progress::LogWriter;
use super::Style;

thread_local! {
    /// Set once this thread is ending. A `Cell<bool>` has no destructor, so
    /// reading it works while the other thread-locals are torn down.
    static ENDING: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as ending: its log events are dropped from now
/// on. The runtime calls it on each of its threads before the thread exits;
/// `command::run` on the main thread after the runtime is shut down.
pub fn thread_ending() {
    ENDING.with(|ending| ending.set(true));
}

/// Drops every event of a thread marked by [`thread_ending`]. It is the
/// outermost layer, so nothing else sees those events.
struct QuietWhileEnding;

impl<S: Subscriber> Layer<S> for QuietWhileEnding {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Asked for every event: whether its thread is ending.
        Interest::sometimes()
    }

    fn enabled(&self, _: &Metadata<'_>, _: Context<'_, S>) -> bool {
        !ENDING.with(Cell::get)
    }
}

/// The subscriber: events filtered by `filter`, formatted to stderr
/// around the progress lines, none from an ending thread.
pub fn subscriber(filter: EnvFilter, style: Style) -> impl Subscriber + Send + Sync {
    let format = tracing_subscriber::fmt::layer()
        .with_writer(LogWriter)
        .with_ansi(style.stderr_color)
        .with_target(true);
    tracing_subscriber::registry()
        .with(format)
        .with(filter)
        .with(QuietWhileEnding)
}

/// Sets up tracing to stderr, filtered by `PROV_LOG` (e.g. `PROV_LOG=debug`,
/// `PROV_LOG=prov=trace`); warnings only by default.
pub fn init(style: Style) {
    let filter = EnvFilter::try_from_env("PROV_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = subscriber(filter, style).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs when dropped, as sled's buffers do.
    struct LogsWhenDropped;

    impl Drop for LogsWhenDropped {
        fn drop(&mut self) {
            tracing::debug!("dropped during thread teardown");
        }
    }

    thread_local! {
        static LATE: LogsWhenDropped = const { LogsWhenDropped };
    }

    /// A runtime thread whose teardown drops a value that logs: the
    /// formatter's own thread-local (made by the first event, after the
    /// value) is torn down first. Without the quiet layer the process
    /// aborts here.
    #[test]
    fn a_value_logging_while_its_runtime_thread_ends_does_not_abort() {
        let style = Style {
            stdout_color: false,
            stderr_color: false,
            live_progress: false,
        };
        tracing::subscriber::set_global_default(subscriber(EnvFilter::new("debug"), style))
            .unwrap();
        let runtime = crate::command::runtime().unwrap();
        runtime.block_on(async {
            tokio::task::spawn_blocking(|| {
                LATE.with(|_| ());
                tracing::debug!("the formatter's thread-locals exist now");
            })
            .await
            .unwrap();
        });
        drop(runtime);
        tracing::debug!("still here");
    }
}
