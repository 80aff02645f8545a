//! The one error type of the SSH layer. Every variant names the `host:port`
//! it is about and says what a person can do next.

use std::time::Duration;

/// Everything that can go wrong while connecting to a host or running a command on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The pinned host key given to prov could not be parsed.
    #[error(
        "the pinned host key for {host} is not an OpenSSH public key line \
         (expected \"ssh-ed25519 AAAA…\"): {reason}"
    )]
    InvalidPinnedKey {
        /// `host:port` the key was pinned for.
        host: String,
        /// Why parsing failed.
        reason: String,
    },

    /// The TCP connection could not be made (refused, unreachable, unknown name).
    #[error(
        "cannot connect to {host}: {source}; is the host up and is sshd listening on that port?"
    )]
    Connect {
        /// `host:port` prov tried to reach.
        host: String,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// Connecting, the SSH handshake and authentication together took longer than allowed.
    #[error(
        "timed out after {timeout:?} connecting to {host} (TCP connect, SSH handshake and \
         authentication); is the host up and reachable, and is it really sshd on that port?"
    )]
    Timeout {
        /// `host:port` that did not answer in time.
        host: String,
        /// The connect timeout that ran out.
        timeout: Duration,
    },

    /// The host presented a host key other than the pinned one; nothing was sent to it.
    #[error(
        "host key mismatch for {host}: the host presented {presented} but prov has {expected} \
         pinned. The connection was dropped before authenticating, nothing was sent. This may be \
         a man-in-the-middle attack; if the host was legitimately rebuilt, set host_key for it in \
         the spec to the new key (a key in the spec takes precedence over the one prov recorded)"
    )]
    HostKeyMismatch {
        /// `host:port` that presented the key.
        host: String,
        /// The pinned key, OpenSSH one-line form.
        expected: String,
        /// The key the host presented, OpenSSH one-line form.
        presented: String,
    },

    /// The SSH protocol failed before authentication (no common algorithm, peer hung up, …).
    #[error("SSH handshake with {host} failed: {source}")]
    Handshake {
        /// `host:port` of the peer.
        host: String,
        /// russh's description of the failure.
        source: russh::Error,
    },

    /// No identity was accepted by the host.
    #[error(
        "authentication as {user} on {host} failed; tried: {}. Check that one of these keys is in \
         the host's authorized_keys for {user}",
        if tried.is_empty() { "nothing (no identity files given and no agent)".to_owned() } else { tried.join("; ") }
    )]
    Auth {
        /// The remote user.
        user: String,
        /// `host:port` of the peer.
        host: String,
        /// One line per identity or agent key tried, with its outcome.
        tried: Vec<String>,
    },

    /// The jump host refused or failed to open a tunnel to the target.
    #[error("jump host {jump} could not open a tunnel to {host}: {reason}")]
    Tunnel {
        /// `host:port` of the final target.
        host: String,
        /// `host:port` of the jump host.
        jump: String,
        /// Why the channel could not be opened.
        reason: String,
    },

    /// Opening a channel or talking over an established connection failed.
    #[error("SSH session with {host} failed: {source}")]
    Session {
        /// `host:port` of the peer.
        host: String,
        /// russh's description of the failure.
        source: russh::Error,
    },

    /// The host refused to start the command (for example a forced command or a restricted account).
    #[error("{host} refused to run `{command}` (the exec request was denied)")]
    ExecRefused {
        /// `host:port` of the peer.
        host: String,
        /// The command that was refused.
        command: String,
    },

    /// The connection ended before the remote command reported how it exited.
    #[error(
        "connection to {host} was lost while running `{command}`; the command's outcome is \
         unknown (it may still be running on the host)"
    )]
    ConnectionLost {
        /// `host:port` of the peer.
        host: String,
        /// The command that was running.
        command: String,
    },

    /// Reading the local input that was being streamed to a remote command failed.
    #[error("reading the input for `{command}` on {host} failed: {source}")]
    Input {
        /// `host:port` of the peer.
        host: String,
        /// The command the input was for.
        command: String,
        /// The local I/O error.
        source: std::io::Error,
    },

    /// A remote command exited unsuccessfully (non-zero status or killed by a signal).
    #[error("`{command}` on {host} {}{}", describe_exit(*status, signal.as_deref()), describe_stderr(stderr))]
    Command {
        /// `host:port` of the peer.
        host: String,
        /// The command as sent.
        command: String,
        /// Exit status, if the command exited normally.
        status: Option<u32>,
        /// Signal name (e.g. `TERM`), if the command was killed by a signal.
        signal: Option<String>,
        /// Its standard error, decoded lossily, trailing whitespace trimmed.
        stderr: String,
    },
}

impl SshError {
    /// Whether the host was refused for its key (it presented another key
    /// than the pinned one, or the pinned key is unusable): trying again
    /// cannot help.
    #[must_use]
    pub fn is_host_key_refusal(&self) -> bool {
        matches!(
            self,
            Self::HostKeyMismatch { .. } | Self::InvalidPinnedKey { .. }
        )
    }

    /// The SSH error somewhere in `error`'s chain of causes, if any.
    #[must_use]
    pub fn find_in(error: &anyhow::Error) -> Option<&SshError> {
        error
            .chain()
            .find_map(|cause| cause.downcast_ref::<SshError>())
    }
}

fn describe_exit(status: Option<u32>, signal: Option<&str>) -> String {
    match (status, signal) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended without an exit status".to_owned(),
    }
}

/// At most this many bytes of stderr end up in the error message (the tail,
/// where the reason usually is); the `stderr` field keeps all of it.
const STDERR_IN_MESSAGE: usize = 2000;

fn describe_stderr(stderr: &str) -> String {
    if stderr.is_empty() {
        return String::new();
    }
    let mut start = stderr.len().saturating_sub(STDERR_IN_MESSAGE);
    while !stderr.is_char_boundary(start) {
        start += 1;
    }
    let ellipsis = if start > 0 { "…" } else { "" };
    format!(":\n{ellipsis}{}", stderr.get(start..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mismatch() -> SshError {
        SshError::HostKeyMismatch {
            host: "h:22".into(),
            expected: "ssh-ed25519 A".into(),
            presented: "ssh-ed25519 B".into(),
        }
    }

    #[test]
    fn host_key_refusals_are_found_through_context() {
        let error = anyhow::Error::new(mismatch()).context("connecting to web[0]");
        assert!(SshError::find_in(&error).is_some_and(SshError::is_host_key_refusal));
        let timeout = anyhow::Error::new(SshError::Timeout {
            host: "h:22".into(),
            timeout: Duration::from_secs(1),
        })
        .context("connecting to web[0]");
        assert!(!SshError::find_in(&timeout).is_some_and(SshError::is_host_key_refusal));
        // Words in a message are not a refusal: only the type is.
        let text = anyhow::anyhow!("no SSH host key is pinned");
        assert!(SshError::find_in(&text).is_none());
    }
}
