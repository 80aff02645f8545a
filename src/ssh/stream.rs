//! Commands whose output is passed on as it comes rather than collected,
//! and interactive sessions: input streamed from the caller, a login shell
//! or a command, on a pseudo-terminal (with window size changes) when the
//! caller has one (`prov ssh`, `prov exec`).

use russh::{ChannelMsg, Pty};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::exec::signal_name_of;
use super::{Connection, ExecOutput, SshError};

/// Which of the remote command's outputs a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (everything, on a pseudo-terminal).
    Stdout,
    /// Standard error.
    Stderr,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Columns.
    pub columns: u32,
    /// Rows.
    pub rows: u32,
}

/// The pseudo-terminal to ask the host for.
#[derive(Debug)]
pub struct Terminal {
    /// `TERM` (`xterm-256color`).
    pub term: String,
    /// The size now.
    pub size: WindowSize,
    /// Later sizes, as the local terminal is resized.
    pub resized: mpsc::Receiver<WindowSize>,
}

/// What to run: a command, or the user's login shell.
#[derive(Debug)]
pub struct Request<'a> {
    /// The command (`None`: a login shell).
    pub command: Option<&'a str>,
    /// A pseudo-terminal for it, when the caller has a terminal.
    pub terminal: Option<Terminal>,
}

/// Size of each chunk of input read and sent.
const INPUT_CHUNK: usize = 32 * 1024;

impl Connection {
    /// Runs `request`, sending `input` to it (then EOF) and handing each
    /// chunk of its output to `output` as it arrives; returns how it ended
    /// (the output fields of the result are empty).
    ///
    /// # Errors
    /// When the channel cannot be opened, the host refuses the request, or
    /// the connection is lost before the command ends.
    pub async fn exec_streaming(
        &self,
        request: Request<'_>,
        mut input: impl AsyncRead + Unpin + Send,
        output: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<ExecOutput, SshError> {
        let what = request.command.unwrap_or("(login shell)").to_owned();
        tracing::debug!(host = %self.address, user = %self.user, command = %what, pty = request.terminal.is_some(), "ssh exec (streaming)");
        let (_permit, channel) = self.open_channel().await?;
        let session_error = |source| self.session_error(source);
        let mut resized = None;
        if let Some(terminal) = request.terminal {
            // The host's defaults for a new terminal (cooked, echoing):
            // the local one is raw and passes every key on.
            let modes: [(Pty, u32); 0] = [];
            let WindowSize { columns, rows } = terminal.size;
            channel
                .request_pty(false, &terminal.term, columns, rows, 0, 0, &modes)
                .await
                .map_err(session_error)?;
            resized = Some(terminal.resized);
        }
        match request.command {
            Some(command) => channel.exec(true, command).await,
            None => channel.request_shell(true).await,
        }
        .map_err(session_error)?;
        let (mut reader, writer) = channel.split();
        let mut buffer = vec![0; INPUT_CHUNK];
        let mut sending = true;
        let mut started = false;
        let mut ended = ExecOutput::default();
        loop {
            tokio::select! {
                read = input.read(&mut buffer), if sending => {
                    let chunk = match read {
                        Ok(n) => buffer.get(..n).unwrap_or_default(),
                        Err(error) => {
                            tracing::debug!(%error, "reading input failed; sending EOF");
                            &[]
                        }
                    };
                    if chunk.is_empty() {
                        sending = false;
                        let _ = writer.eof().await;
                    } else if writer.data_bytes(chunk.to_vec()).await.is_err() {
                        sending = false;
                    }
                }
                size = next_size(&mut resized), if resized.is_some() => match size {
                    Some(WindowSize { columns, rows }) => {
                        let _ = writer.window_change(columns, rows, 0, 0).await;
                    }
                    None => resized = None,
                },
                message = reader.wait() => match message {
                    None => break,
                    Some(ChannelMsg::Data { data }) => output(Stream::Stdout, &data),
                    // Extended data type 1 is stderr (RFC 4254 §5.2).
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => output(Stream::Stderr, &data),
                    Some(ChannelMsg::ExitStatus { exit_status }) => ended.status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        ended.signal = Some(signal_name_of(&signal_name));
                    }
                    Some(ChannelMsg::Success) => started = true,
                    Some(ChannelMsg::Failure) if !started => {
                        return Err(SshError::ExecRefused {
                            host: self.address.clone(),
                            command: what,
                        });
                    }
                    Some(_) => {}
                },
            }
        }
        if ended.status.is_none() && ended.signal.is_none() {
            return Err(SshError::ConnectionLost {
                host: self.address.clone(),
                command: what,
            });
        }
        Ok(ended)
    }
}

/// The next window size, or `None` once the sender is gone.
async fn next_size(resized: &mut Option<mpsc::Receiver<WindowSize>>) -> Option<WindowSize> {
    match resized {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
