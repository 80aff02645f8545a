//! Everything a person sees: logging setup, colors, errors, confirmation.

use std::io::{BufRead, IsTerminal, Write};

use owo_colors::OwoColorize;

use crate::cli::ColorChoice;

/// Sets up tracing to stderr, filtered by `PROV_LOG` (e.g. `PROV_LOG=debug`,
/// `PROV_LOG=prov=trace`); warnings only by default.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .try_init();
}

/// Prints an error and its causes to stderr.
pub fn print_error(error: &anyhow::Error) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
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
    /// A painter for stdout honoring `choice` and `NO_COLOR`.
    #[must_use]
    pub fn for_stdout(choice: ColorChoice) -> Self {
        let enabled = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        Self { enabled }
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
