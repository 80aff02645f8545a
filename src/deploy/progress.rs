//! Progress of a deploy: on a terminal, one live line per host, redrawn in
//! place; otherwise (CI, pipes) plain lines, one per phase change.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prov_provider::Address;

/// The progress display of one run.
#[derive(Debug)]
pub struct Progress {
    live: bool,
    inner: Mutex<Lines>,
}

#[derive(Debug, Default)]
struct Lines {
    hosts: Vec<(String, String)>,
    drawn: usize,
    last_draw: Option<Instant>,
}

impl Progress {
    /// Live lines when `live` (stdout is a terminal), plain lines otherwise.
    #[must_use]
    pub fn new(live: bool) -> Self {
        Self {
            live,
            inner: Mutex::new(Lines::default()),
        }
    }

    /// A new phase of `host` (`copying 12 paths (3.4 MiB)`): always shown.
    pub fn phase(&self, host: &Address, text: &str) {
        self.set(host, text, true);
    }

    /// A running figure (`copied 1.2 of 3.4 MiB`): shown live only,
    /// at most ten times a second.
    pub fn tick(&self, host: &Address, text: &str) {
        if self.live {
            self.set(host, text, false);
        }
    }

    fn set(&self, host: &Address, text: &str, important: bool) {
        let Ok(mut lines) = self.inner.lock() else {
            return;
        };
        let name = host.to_string();
        if !self.live {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{name}: {text}");
            return;
        }
        match lines.hosts.iter_mut().find(|(h, _)| *h == name) {
            Some((_, line)) => text.clone_into(line),
            None => lines.hosts.push((name, text.to_owned())),
        }
        let due = lines
            .last_draw
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if important || due {
            redraw(&mut lines);
        }
    }

    /// Leaves the final lines on screen.
    pub fn finish(&self) {
        if let Ok(mut lines) = self.inner.lock() {
            if self.live {
                redraw(&mut lines);
            }
            lines.drawn = 0;
            lines.hosts.clear();
        }
    }
}

fn redraw(lines: &mut Lines) {
    let mut out = std::io::stdout().lock();
    if lines.drawn > 0 {
        // Move up over the previous drawing and clear it.
        let _ = write!(out, "\x1b[{}A", lines.drawn);
    }
    let width = lines.hosts.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
    for (host, text) in &lines.hosts {
        let _ = writeln!(out, "\x1b[2K{host:width$}  {text}");
    }
    let _ = out.flush();
    lines.drawn = lines.hosts.len();
    lines.last_draw = Some(Instant::now());
}
