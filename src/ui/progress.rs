//! Progress of a deploy: on a terminal, one live line per host (indicatif's
//! `MultiProgress`, each line cut to the terminal's width so nothing wraps);
//! otherwise (CI, pipes, `--color never`) plain lines, one per phase change.
//!
//! Log lines (tracing, to stderr) share the terminal with the live lines:
//! [`LogWriter`] hides the live lines while it writes one and draws them
//! again after it, so neither tears the other. That is indicatif's own
//! `suspend`, wrapped in a tracing `MakeWriter`: a dozen lines instead of the
//! `tracing-indicatif` crate, which draws tracing *spans* as progress bars,
//! a different model from prov's one line per host.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use prov_provider::Address;

/// The live display log lines must step around while one is shown, with
/// the number that tells which [`Progress`] it belongs to.
static ACTIVE: Mutex<Option<(u64, MultiProgress)>> = Mutex::new(None);

/// Numbers the live displays.
static NEXT_DISPLAY: AtomicU64 = AtomicU64::new(0);

/// The progress display of one run.
#[derive(Debug)]
pub struct Progress {
    live: Option<Live>,
}

/// The live lines: indicatif's display and one bar per host, in the order
/// the hosts first reported.
#[derive(Debug)]
struct Live {
    display: u64,
    multi: MultiProgress,
    bars: Mutex<Vec<(String, ProgressBar)>>,
}

impl Progress {
    /// Live lines when `live` (see [`crate::ui::Style::live_progress`]),
    /// plain lines otherwise.
    #[must_use]
    pub fn new(live: bool) -> Self {
        let live = live.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let display = NEXT_DISPLAY.fetch_add(1, Ordering::Relaxed);
            *ACTIVE.lock().unwrap_or_else(PoisonError::into_inner) = Some((display, multi.clone()));
            Live {
                display,
                multi,
                bars: Mutex::new(Vec::new()),
            }
        });
        Self { live }
    }

    /// A new phase of `host` (`copying 12 paths (3.4 MiB)`): always shown.
    pub fn phase(&self, host: &Address, text: &str) {
        match &self.live {
            Some(live) => live.set(host, text),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{host}: {text}");
            }
        }
    }

    /// A line about the whole run (the cache being filled), above the
    /// hosts' lines.
    pub fn note(&self, text: &str) {
        match &self.live {
            Some(live) => {
                let _ = live.multi.println(text);
            }
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
            }
        }
    }

    /// A running figure (`copied 1.2 of 3.4 MiB`): shown live only (indicatif
    /// draws at most 20 times a second).
    pub fn tick(&self, host: &Address, text: &str) {
        if let Some(live) = &self.live {
            live.set(host, text);
        }
    }

    /// Leaves the final lines on screen; log lines go straight to stderr again.
    pub fn finish(&self) {
        if let Some(live) = &self.live {
            let mut bars = live.bars.lock().unwrap_or_else(PoisonError::into_inner);
            for (_, bar) in bars.iter() {
                bar.finish();
            }
            bars.clear();
            live.release();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(live) = &self.live {
            live.release();
        }
    }
}

impl Live {
    fn set(&self, host: &Address, text: &str) {
        let name = host.to_string();
        // One line per host: a multi-line error shows its first line here
        // (the whole of it is in the summary after the run).
        let line = text.lines().next().unwrap_or_default().to_owned();
        let mut bars = self.bars.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, bar)) = bars.iter().find(|(h, _)| *h == name) {
            bar.set_message(line);
            return;
        }
        let widest = bars.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
        let width = widest.max(name.len());
        let bar = self.multi.add(ProgressBar::no_length());
        bar.set_prefix(name.clone());
        bar.set_message(line);
        bars.push((name, bar));
        // Names line up: a longer name widens every line's first column.
        let style = line_style(width);
        for (_, bar) in bars.iter() {
            bar.set_style(style.clone());
        }
    }

    /// Stops routing log lines around this display (if it is the one shown).
    fn release(&self) {
        let mut active = ACTIVE.lock().unwrap_or_else(PoisonError::into_inner);
        if active
            .as_ref()
            .is_some_and(|(display, _)| *display == self.display)
        {
            *active = None;
        }
    }
}

/// `HOST  TEXT`, the host padded to `width`, the text cut to the terminal.
fn line_style(width: usize) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{{prefix:{width}}}  {{wide_msg}}"))
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// A tracing writer to stderr that steps around the live progress lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl Write for LogWriter {
    /// Writes one formatted log line (tracing hands over a whole event at once).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, multi)| multi.clone());
        match active {
            Some(multi) => multi.suspend(|| std::io::stderr().lock().write_all(buf))?,
            None => std::io::stderr().lock().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active() -> bool {
        ACTIVE.lock().unwrap().is_some()
    }

    #[test]
    fn live_lines_show_one_line_per_host_until_finished() {
        // stdout is not a terminal under the test runner: indicatif draws
        // nothing, and everything else runs as on a terminal.
        let progress = Progress::new(true);
        assert!(active());
        let web: Address = "web[0]".parse().unwrap();
        let db: Address = "database[0]".parse().unwrap();
        progress.phase(&web, "copying 12 paths");
        progress.phase(&db, "FAILED: first line\n  caused by: second");
        progress.tick(&web, "copied 1.2 of 3.4 MiB");
        {
            let live = progress.live.as_ref().unwrap();
            let bars = live.bars.lock().unwrap();
            let lines: Vec<(String, String)> = bars
                .iter()
                .map(|(host, bar)| (host.clone(), bar.message()))
                .collect();
            assert_eq!(
                lines,
                [
                    ("web[0]".to_owned(), "copied 1.2 of 3.4 MiB".to_owned()),
                    ("database[0]".to_owned(), "FAILED: first line".to_owned()),
                ]
            );
        }
        LogWriter.write_all(b"").unwrap();
        progress.finish();
        assert!(!active());
    }

    #[test]
    fn plain_progress_routes_no_log_lines() {
        let progress = Progress::new(false);
        assert!(!active());
        progress.tick(&"web[0]".parse().unwrap(), "ignored when plain");
        assert!(progress.live.is_none());
    }
}
