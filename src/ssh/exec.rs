//! Running commands over a connection: one session channel per command, so
//! any number of commands can run at once over the same connection.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, SemaphorePermit};

use super::{shell_quote, Connection, SshError};

/// What a remote command produced and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status, when the command exited normally (`None` when killed by a signal).
    pub status: Option<u32>,
    /// Name of the signal that killed the command (`"TERM"`, `"KILL"`, …), if it was killed.
    pub signal: Option<String>,
    /// Everything the command wrote to standard output.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to standard error.
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// `command` as root: unchanged for root, else `sudo -n -- sh -c '<command>'`.
pub(crate) fn privileged_command(is_root: bool, command: &str) -> String {
    if is_root {
        command.to_owned()
    } else {
        format!("sudo -n -- sh -c {}", shell_quote(command))
    }
}

/// Size of each chunk of input read and sent to a remote command.
const INPUT_CHUNK: usize = 64 * 1024;

/// A remote command's input, chunk by chunk. Chunks are owned [`Bytes`]:
/// russh takes them as they are, without another copy.
pub(super) trait Input {
    /// The next chunk; `None` at the end.
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>>;
}

/// Input read from a reader, [`INPUT_CHUNK`] at a time, into fresh
/// buffers (not zeroed first: `read_buf` fills what it hands over).
struct FromReader<R>(R);

impl<R: AsyncRead + Unpin + Send> Input for FromReader<R> {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        let mut buffer = BytesMut::with_capacity(INPUT_CHUNK);
        let read = self.0.read_buf(&mut buffer).await?;
        Ok((read > 0).then(|| buffer.freeze()))
    }
}

/// Input handed over as chunks (ends when the sender is dropped).
pub(super) struct FromChunks(pub(super) mpsc::Receiver<Bytes>);

impl Input for FromChunks {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        Ok(self.0.recv().await)
    }
}

/// No input.
struct Nothing;

impl Input for Nothing {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        Ok(None)
    }
}

impl Connection {
    /// Runs `command` with empty input and collects its output, whatever its exit status.
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, SshError> {
        self.run(command, Nothing, &|_| {}).await
    }

    /// Runs `command`, streaming `input` to its stdin (then EOF) and calling
    /// `progress(total bytes sent so far)` after each chunk; returns when the command exits.
    /// If the command exits before reading all input, the rest is not sent.
    pub async fn exec_with_input(
        &self,
        command: &str,
        input: impl AsyncRead + Unpin + Send,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ExecOutput, SshError> {
        self.run(command, FromReader(input), progress).await
    }

    /// [`Connection::exec_with_input`] with the input as owned chunks, sent
    /// as they come (no copy on prov's side); the input ends when the
    /// sender is dropped.
    pub async fn exec_with_chunks(
        &self,
        command: &str,
        input: mpsc::Receiver<Bytes>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ExecOutput, SshError> {
        self.run(command, FromChunks(input), progress).await
    }

    /// Runs `command` and returns its stdout; a non-zero exit is [`SshError::Command`].
    pub async fn exec_checked(&self, command: &str) -> Result<Vec<u8>, SshError> {
        let output = self.exec(command).await?;
        if output.success() {
            return Ok(output.stdout);
        }
        Err(SshError::Command {
            host: self.address.clone(),
            command: command.to_owned(),
            status: output.status,
            signal: output.signal,
            stderr: String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_owned(),
        })
    }

    /// A new session channel, with the permit that lets it be open: bounded
    /// like the server's MaxSessions, so that many callers queue here
    /// instead of having channel opens refused by the host.
    pub(super) async fn open_channel(
        &self,
    ) -> Result<(Option<SemaphorePermit<'_>>, Channel<Msg>), SshError> {
        let permit = self.channels.acquire().await.ok();
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|source| self.session_error(source))?;
        Ok((permit, channel))
    }

    /// [`SshError::Session`] on this connection.
    pub(super) fn session_error(&self, source: russh::Error) -> SshError {
        SshError::Session {
            host: self.address.clone(),
            source,
        }
    }

    async fn run(
        &self,
        command: &str,
        input: impl Input + Send,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ExecOutput, SshError> {
        let started = Instant::now();
        tracing::debug!(host = %self.address, user = %self.user, command, "ssh exec");
        let (_permit, channel) = self.open_channel().await?;
        channel
            .exec(true, command)
            .await
            .map_err(|source| self.session_error(source))?;
        let (mut reader, writer) = channel.split();

        let outcome = sending_while_receiving(
            send_input(&writer, input, progress),
            receive_output(&mut reader),
        )
        .await;
        let received = match outcome {
            Ok(received) => received,
            Err(source) => {
                // The remote command must not go on with half its input as if
                // that were all of it: close the channel and report.
                let _ = writer.close().await;
                return Err(SshError::Input {
                    host: self.address.clone(),
                    command: command.to_owned(),
                    source,
                });
            }
        };
        let output = match received {
            Received::Exited(output) => output,
            Received::Refused => {
                return Err(SshError::ExecRefused {
                    host: self.address.clone(),
                    command: command.to_owned(),
                })
            }
            Received::Lost => {
                return Err(SshError::ConnectionLost {
                    host: self.address.clone(),
                    command: command.to_owned(),
                })
            }
        };
        tracing::debug!(
            host = %self.address,
            command,
            status = ?output.status,
            signal = ?output.signal,
            stdout_bytes = output.stdout.len(),
            stderr_bytes = output.stderr.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ssh exec done"
        );
        Ok(output)
    }
}

/// Runs `send` (the input) and `receive` (the output) together until
/// `receive` is done: the command may end before taking all its input. A
/// local error reading the input ends it early.
pub(super) async fn sending_while_receiving<T>(
    send: impl std::future::Future<Output = Result<(), std::io::Error>>,
    receive: impl std::future::Future<Output = T>,
) -> Result<T, std::io::Error> {
    tokio::pin!(send, receive);
    let mut sending = true;
    loop {
        tokio::select! {
            sent = &mut send, if sending => {
                sending = false;
                sent?;
            }
            received = &mut receive => return Ok(received),
        }
    }
}

/// Sends `input` (if any) and then EOF. Only a local read error is an error:
/// when the channel is gone the command has ended, which the reader reports.
pub(super) async fn send_input(
    writer: &ChannelWriteHalf<Msg>,
    mut input: impl Input,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), std::io::Error> {
    let mut total: u64 = 0;
    while let Some(chunk) = input.next_chunk().await? {
        let len = chunk.len() as u64;
        if let Err(error) = writer.data_bytes(chunk).await {
            tracing::debug!(%error, "remote side stopped taking input");
            return Ok(());
        }
        total += len;
        progress(total);
    }
    if let Err(error) = writer.eof().await {
        tracing::debug!(%error, "could not send EOF");
    }
    Ok(())
}

/// How the channel ended.
enum Received {
    Exited(ExecOutput),
    /// The host answered the exec request with a failure.
    Refused,
    /// The channel closed without an exit status or signal.
    Lost,
}

/// Collects stdout, stderr and the exit status until the channel closes.
async fn receive_output(reader: &mut ChannelReadHalf) -> Received {
    let mut output = ExecOutput::default();
    let mut started = false;
    while let Some(message) = reader.wait().await {
        match message {
            ChannelMsg::Data { data } => output.stdout.extend_from_slice(&data),
            // Extended data type 1 is stderr (RFC 4254 §5.2).
            ChannelMsg::ExtendedData { data, ext: 1 } => output.stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => output.status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                output.signal = Some(signal_name_of(&signal_name));
            }
            ChannelMsg::Success => started = true,
            ChannelMsg::Failure if !started => return Received::Refused,
            _ => {}
        }
    }
    if output.status.is_none() && output.signal.is_none() {
        return Received::Lost;
    }
    Received::Exited(output)
}

/// The name of `signal` (`TERM`), as OpenSSH prints it.
pub(super) fn signal_name_of(signal: &Sig) -> String {
    let name = match signal {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_wraps_only_non_root() {
        assert_eq!(privileged_command(true, "id -u"), "id -u");
        assert_eq!(
            privileged_command(false, "echo 'a' > /b"),
            r"sudo -n -- sh -c 'echo '\''a'\'' > /b'"
        );
    }
}
