//! A conversation with one remote command: write to it and read from it as
//! its protocol needs (Nix's serve protocol asks, then copies), then finish:
//! the rest of the input, EOF, whatever it still says and how it ended.

use bytes::{Buf as _, Bytes, BytesMut};
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::exec::{send_input, sending_while_receiving, signal_name_of, FromChunks};
use super::{Connection, ExecOutput, SshError};

/// A remote command being talked to.
pub struct Session {
    host: String,
    command: String,
    _permit: Option<OwnedSemaphorePermit>,
    writer: ChannelWriteHalf<Msg>,
    reader: ChannelReadHalf,
    got: Got,
    ended: bool,
}

/// What the command said so far.
#[derive(Default)]
struct Got {
    /// Received and not yet read.
    stdout: BytesMut,
    stderr: Vec<u8>,
    status: Option<u32>,
    signal: Option<String>,
    /// The host accepted the exec request.
    started: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.host)
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Starts `command` for a conversation (see [`Session`]).
    ///
    /// # Errors
    /// When the channel cannot be opened or the command not started.
    pub async fn start(&self, command: &str) -> Result<Session, SshError> {
        tracing::debug!(host = %self.address, user = %self.user, command, "ssh session");
        let permit = std::sync::Arc::clone(&self.channels)
            .acquire_owned()
            .await
            .ok();
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|source| self.session_error(source))?;
        channel
            .exec(true, command)
            .await
            .map_err(|source| self.session_error(source))?;
        let (reader, writer) = channel.split();
        Ok(Session {
            host: self.address.clone(),
            command: command.to_owned(),
            _permit: permit,
            writer,
            reader,
            got: Got::default(),
            ended: false,
        })
    }
}

impl Session {
    /// Sends `data` to the command's input.
    ///
    /// # Errors
    /// When the command no longer takes input ([`Session::read_exact`]
    /// then says how it ended).
    pub async fn write(&self, data: Bytes) -> Result<(), SshError> {
        self.writer.data_bytes(data).await.map_err(|_| self.lost())
    }

    /// The next `len` bytes of the command's output.
    ///
    /// # Errors
    /// When the command ends (or the connection drops) before saying that
    /// much: its exit and standard error, as [`SshError::Command`].
    pub async fn read_exact(&mut self, len: usize) -> Result<Bytes, SshError> {
        while self.got.stdout.len() < len {
            if !self.receive().await? {
                return Err(self.ended_early());
            }
        }
        Ok(self.got.stdout.split_to(len).freeze())
    }

    /// The output up to and including the next newline (at most `max`
    /// bytes).
    ///
    /// # Errors
    /// As [`Session::read_exact`], and when no newline comes within `max`.
    pub async fn read_line(&mut self, max: usize) -> Result<Bytes, SshError> {
        loop {
            if let Some(end) = self.got.stdout.iter().position(|b| *b == b'\n') {
                return Ok(self.got.stdout.split_to(end + 1).freeze());
            }
            if self.got.stdout.len() >= max || !self.receive().await? {
                return Err(self.ended_early());
            }
        }
    }

    /// Sends `input` (then EOF) while collecting everything the command
    /// still says, and how it ended; `progress(total bytes sent)` as input
    /// goes out. The output holds what was not read yet.
    ///
    /// # Errors
    /// When the connection drops, or reading `input` fails.
    pub async fn finish(
        mut self,
        input: mpsc::Receiver<Bytes>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ExecOutput, SshError> {
        let outcome = sending_while_receiving(
            send_input(&self.writer, FromChunks(input), progress),
            receive_all(&mut self.reader, &mut self.got),
        )
        .await;
        match outcome {
            Err(source) => {
                let _ = self.writer.close().await;
                Err(SshError::Input {
                    host: self.host.clone(),
                    command: self.command.clone(),
                    source,
                })
            }
            Ok(Err(Refused)) => Err(SshError::ExecRefused {
                host: self.host.clone(),
                command: self.command.clone(),
            }),
            Ok(Ok(())) if self.got.status.is_none() && self.got.signal.is_none() => {
                Err(self.lost())
            }
            Ok(Ok(())) => Ok(ExecOutput {
                status: self.got.status,
                signal: self.got.signal.take(),
                stdout: self.got.stdout.to_vec(),
                stderr: std::mem::take(&mut self.got.stderr),
            }),
        }
    }

    /// Ends the conversation without waiting: EOF to the command.
    pub async fn close(self) {
        let _ = self.writer.eof().await;
    }

    /// Takes one message; `false` when the channel has closed.
    async fn receive(&mut self) -> Result<bool, SshError> {
        if self.ended {
            return Ok(false);
        }
        match receive_one(&mut self.reader, &mut self.got).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.ended = true;
                Ok(false)
            }
            Err(Refused) => Err(SshError::ExecRefused {
                host: self.host.clone(),
                command: self.command.clone(),
            }),
        }
    }

    fn lost(&self) -> SshError {
        SshError::ConnectionLost {
            host: self.host.clone(),
            command: self.command.clone(),
        }
    }

    fn ended_early(&self) -> SshError {
        if self.got.status.is_none() && self.got.signal.is_none() {
            return self.lost();
        }
        SshError::Command {
            host: self.host.clone(),
            command: self.command.clone(),
            status: self.got.status,
            signal: self.got.signal.clone(),
            stderr: String::from_utf8_lossy(&self.got.stderr)
                .trim_end()
                .to_owned(),
        }
    }
}

/// The host refused to run the command.
struct Refused;

/// Takes one message into `got`; `false` when the channel has closed.
async fn receive_one(reader: &mut ChannelReadHalf, got: &mut Got) -> Result<bool, Refused> {
    let Some(message) = reader.wait().await else {
        return Ok(false);
    };
    match message {
        ChannelMsg::Data { data } => got.stdout.extend_from_slice(data.chunk()),
        // Extended data type 1 is stderr (RFC 4254 §5.2).
        ChannelMsg::ExtendedData { data, ext: 1 } => got.stderr.extend_from_slice(&data),
        ChannelMsg::ExitStatus { exit_status } => got.status = Some(exit_status),
        ChannelMsg::ExitSignal { signal_name, .. } => {
            got.signal = Some(signal_name_of(&signal_name));
        }
        ChannelMsg::Success => got.started = true,
        ChannelMsg::Failure if !got.started => return Err(Refused),
        _ => {}
    }
    Ok(true)
}

/// Takes every message into `got` until the channel closes.
async fn receive_all(reader: &mut ChannelReadHalf, got: &mut Got) -> Result<(), Refused> {
    while receive_one(reader, got).await? {}
    Ok(())
}
