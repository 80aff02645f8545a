//! The local terminal during `prov ssh`: raw mode while a remote session
//! owns it (restored however the session ends), its size, and its resizes.

use std::io::IsTerminal as _;
use std::os::fd::AsFd as _;

use rustix::termios::{self, OptionalActions, Termios};
use tokio::sync::mpsc;

use crate::ssh::WindowSize;

/// Raw mode on stdin until dropped.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts the terminal on stdin in raw mode: every key (Ctrl-C included)
    /// goes to the remote side, nothing is echoed locally.
    ///
    /// # Errors
    /// When stdin is not a terminal.
    pub fn enable() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        if let Err(error) = termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &self.saved) {
            tracing::warn!(%error, "could not restore the terminal; run `reset`");
        }
    }
}

/// Whether stdin and stdout are both terminals (an interactive session).
#[must_use]
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The size of the terminal on stdout (80×24 when it cannot be read).
#[must_use]
pub fn size() -> WindowSize {
    match termios::tcgetwinsize(std::io::stdout().as_fd()) {
        Ok(size) if size.ws_col > 0 && size.ws_row > 0 => WindowSize {
            columns: u32::from(size.ws_col),
            rows: u32::from(size.ws_row),
        },
        _ => WindowSize {
            columns: 80,
            rows: 24,
        },
    }
}

/// The terminal's new size after each resize (SIGWINCH), until the
/// receiver is dropped.
///
/// # Errors
/// When the signal handler cannot be installed.
pub fn resizes() -> std::io::Result<mpsc::Receiver<WindowSize>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut window_changes = signal(SignalKind::window_change())?;
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        while window_changes.recv().await.is_some() {
            if sender.send(size()).await.is_err() {
                break;
            }
        }
    });
    Ok(receiver)
}
