//! Everything a person sees: how output looks ([`Style`], the one place
//! that decides color and live lines), logging setup, colors, errors,
//! confirmation, and a deploy's progress lines ([`progress`]).

pub mod logging;
pub mod progress;
pub mod terminal;

use std::io::{BufRead, IsTerminal, Write};

use owo_colors::OwoColorize;

use crate::cli::ColorChoice;

/// How output looks for the whole run, decided in one place from
/// `--color`, `NO_COLOR`, `CI` and which streams are terminals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Color on stdout (plans, apply lines).
    pub stdout_color: bool,
    /// Color on stderr (errors, log lines).
    pub stderr_color: bool,
    /// A deploy's per-host lines redrawn in place on stdout.
    pub live_progress: bool,
}

/// What [`Style`] is decided from, read from the process by [`Style::detect`].
#[derive(Debug, Clone, Copy, Default)]
struct Facts {
    /// `NO_COLOR` is set.
    no_color: bool,
    /// `CI` is set (and not `false` or `0`).
    ci: bool,
    /// stdout is a terminal.
    stdout_terminal: bool,
    /// stderr is a terminal.
    stderr_terminal: bool,
}

impl Style {
    /// The style for `choice` in this process.
    #[must_use]
    pub fn detect(choice: ColorChoice) -> Self {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
        Self::decide(
            choice,
            Facts {
                no_color: std::env::var_os("NO_COLOR").is_some(),
                ci,
                stdout_terminal: std::io::stdout().is_terminal(),
                stderr_terminal: std::io::stderr().is_terminal(),
            },
        )
    }

    /// `always` and `never` are obeyed on both streams; `auto` colors a
    /// terminal unless `NO_COLOR` is set. Live lines need stdout to be a
    /// terminal, not CI (whose logs keep every line), and color not
    /// switched off with `--color never` (a plain run, as for a pipe).
    fn decide(choice: ColorChoice, facts: Facts) -> Self {
        let color = |terminal: bool| match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => terminal && !facts.no_color,
        };
        Self {
            stdout_color: color(facts.stdout_terminal),
            stderr_color: color(facts.stderr_terminal),
            live_progress: choice != ColorChoice::Never && facts.stdout_terminal && !facts.ci,
        }
    }
}

/// Sets up tracing to stderr, filtered by `PROV_LOG` (e.g. `PROV_LOG=debug`,
/// `PROV_LOG=prov=trace`); warnings only by default. Log lines step around
/// a deploy's live progress lines ([`progress::LogWriter`]); see
/// [`logging`].
pub fn init_tracing(style: Style) {
    logging::init(style);
}

/// Prints an error and its causes to stderr.
pub fn print_error(error: &anyhow::Error, style: Style) {
    let color = style.stderr_color;
    let mut stderr = std::io::stderr().lock();
    // A spec error renders itself fully (with location and snippet).
    if let Some(spec) = error.downcast_ref::<crate::spec::SpecError>() {
        let _ = writeln!(stderr, "{spec}");
        return;
    }
    let head = if color {
        "error:".red().bold().to_string()
    } else {
        "error:".to_owned()
    };
    let _ = writeln!(stderr, "{head} {error}");
    for cause in error.chain().skip(1) {
        let _ = writeln!(stderr, "  caused by: {cause}");
    }
}

/// Colors plan output, or not.
#[derive(Debug, Clone, Copy)]
pub struct Painter {
    enabled: bool,
}

impl Painter {
    /// A painter for stdout as [`Style`] decides for `choice`.
    #[must_use]
    pub fn for_stdout(choice: ColorChoice) -> Self {
        Self {
            enabled: Style::detect(choice).stdout_color,
        }
    }

    /// A painter that never colors.
    #[must_use]
    pub fn plain() -> Self {
        Self { enabled: false }
    }

    /// Green (creations).
    #[must_use]
    pub fn green(&self, s: &str) -> String {
        self.paint(s, |s| s.green().to_string())
    }

    /// Yellow (updates).
    #[must_use]
    pub fn yellow(&self, s: &str) -> String {
        self.paint(s, |s| s.yellow().to_string())
    }

    /// Red (destruction).
    #[must_use]
    pub fn red(&self, s: &str) -> String {
        self.paint(s, |s| s.red().to_string())
    }

    /// Magenta (replacement).
    #[must_use]
    pub fn magenta(&self, s: &str) -> String {
        self.paint(s, |s| s.magenta().to_string())
    }

    /// Bold (headings).
    #[must_use]
    pub fn bold(&self, s: &str) -> String {
        self.paint(s, |s| s.bold().to_string())
    }

    /// Dim (comments).
    #[must_use]
    pub fn dim(&self, s: &str) -> String {
        self.paint(s, |s| s.dimmed().to_string())
    }

    fn paint(&self, s: &str, f: impl Fn(&str) -> String) -> String {
        if self.enabled {
            f(s)
        } else {
            s.to_owned()
        }
    }
}

/// Whether stdin and stdout are a terminal (so we may ask questions).
#[must_use]
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Asks `question`; true only when the answer is exactly `yes`. Ctrl-C
/// while waiting for the answer ends the wait with
/// [`crate::interrupt::Interrupted`].
///
/// # Errors
/// When stdin cannot be read, or on Ctrl-C.
pub async fn confirm(question: &str) -> anyhow::Result<bool> {
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "\n{question}\n  Only 'yes' will be accepted to approve.\n"
        )?;
        write!(stdout, "  Enter a value: ")?;
        stdout.flush()?;
    }
    // A read of stdin cannot be cancelled, so it runs on a thread of its
    // own that the process does not wait for.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut answer = String::new();
        let read = std::io::stdin().lock().read_line(&mut answer);
        let _ = tx.send(read.map(|_| answer));
    });
    let answer = crate::interrupt::unless_stopping(rx)
        .await?
        .map_err(|_| anyhow::anyhow!("internal error: the stdin reader stopped"))??;
    Ok(answer.trim() == "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminal() -> Facts {
        Facts {
            stdout_terminal: true,
            stderr_terminal: true,
            ..Facts::default()
        }
    }

    #[test]
    fn auto_colors_terminals_unless_no_color() {
        let style = Style::decide(ColorChoice::Auto, terminal());
        assert!(style.stdout_color && style.stderr_color && style.live_progress);
        let no_color = Facts {
            no_color: true,
            ..terminal()
        };
        let style = Style::decide(ColorChoice::Auto, no_color);
        assert!(!style.stdout_color && !style.stderr_color);
        // NO_COLOR is about color: the lines still redraw in place.
        assert!(style.live_progress);
        let piped = Facts {
            stdout_terminal: false,
            ..terminal()
        };
        let style = Style::decide(ColorChoice::Auto, piped);
        assert!(!style.stdout_color && style.stderr_color && !style.live_progress);
    }

    #[test]
    fn the_flag_wins_on_both_streams() {
        let plain = Facts {
            no_color: true,
            ..Facts::default()
        };
        let style = Style::decide(ColorChoice::Always, plain);
        assert!(style.stdout_color && style.stderr_color && !style.live_progress);
        let style = Style::decide(ColorChoice::Never, terminal());
        assert_eq!(
            style,
            Style {
                stdout_color: false,
                stderr_color: false,
                live_progress: false
            }
        );
    }

    #[test]
    fn ci_gets_plain_lines() {
        let ci = Facts {
            ci: true,
            ..terminal()
        };
        let style = Style::decide(ColorChoice::Auto, ci);
        assert!(style.stdout_color && !style.live_progress);
    }
}
