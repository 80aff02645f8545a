//! Host key pinning: parse the pinned key, compare it with what the server
//! presents during key exchange, and refuse the server before anything is
//! authenticated or sent when they differ.

use std::sync::{Arc, OnceLock};

use russh::keys::{Algorithm, PublicKey, PublicKeyOrCertificate};

use super::SshError;

/// How to decide whether the key a host presents is the right one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// Accept only this key: OpenSSH one-line form, `"ssh-ed25519 AAAA…"` (a trailing comment is ignored).
    Pinned(String),
    /// Trust on first use: accept any key; read it back with `Connection::host_key` and record it.
    AcceptNew,
}

/// A host key check ready for the handshake: the pinned key parsed up front.
#[derive(Debug, Clone)]
pub(crate) enum Expected {
    Pinned(PublicKey),
    Any,
}

impl Expected {
    /// Parses the pinned key, if any; `host` (`host:port`) is only for the error.
    pub(crate) fn new(check: &HostKeyCheck, host: &str) -> Result<Self, SshError> {
        match check {
            HostKeyCheck::AcceptNew => Ok(Expected::Any),
            HostKeyCheck::Pinned(line) => {
                parse_public_key(line)
                    .map(Expected::Pinned)
                    .map_err(|reason| SshError::InvalidPinnedKey {
                        host: host.to_owned(),
                        reason,
                    })
            }
        }
    }

    /// Host key algorithms to offer, the pinned key's first, so that a host with
    /// several host keys presents the pinned one. The others stay in the list so
    /// that a host without that kind of key yields a clear mismatch, not a
    /// "no common algorithm" failure.
    pub(crate) fn preferred_algorithms(&self, defaults: &[Algorithm]) -> Vec<Algorithm> {
        let Expected::Pinned(key) = self else {
            return defaults.to_vec();
        };
        let pinned = key.algorithm();
        let same_kind = |algorithm: &Algorithm| match (algorithm, &pinned) {
            (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
            (algorithm, pinned) => algorithm == pinned,
        };
        let (mut first, rest): (Vec<_>, Vec<_>) = defaults.iter().cloned().partition(same_kind);
        first.extend(rest);
        first
    }
}

/// Parses `"ALGORITHM BASE64 [COMMENT]"`, ignoring surrounding whitespace and the comment.
pub(crate) fn parse_public_key(line: &str) -> Result<PublicKey, String> {
    let mut fields = line.split_whitespace();
    let (Some(algorithm), Some(blob)) = (fields.next(), fields.next()) else {
        return Err(format!("{line:?} has fewer than two fields"));
    };
    PublicKey::from_openssh(&format!("{algorithm} {blob}")).map_err(|error| error.to_string())
}

/// The OpenSSH one-line form of a key, without comment: `"ssh-ed25519 AAAA…"`.
pub(crate) fn openssh_line(key: &PublicKey) -> String {
    let bare = PublicKey::new(key.key_data().clone(), "");
    match bare.to_openssh() {
        Ok(line) => line.trim_end().to_owned(),
        // Encoding a key that was just decoded does not fail; keep something readable anyway.
        Err(_) => format!("{} (unencodable key)", key.algorithm()),
    }
}

/// The russh client handler: checks the server's key and remembers what was presented.
#[derive(Debug)]
pub(crate) struct Handler {
    expected: Expected,
    presented: Arc<OnceLock<PublicKey>>,
}

impl Handler {
    /// A handler for one connection; `presented` receives the server's key.
    pub(crate) fn new(expected: Expected, presented: Arc<OnceLock<PublicKey>>) -> Self {
        Handler {
            expected,
            presented,
        }
    }
}

impl russh::client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Certificates are never asked for (no host_key_certificates in the
        // config); should one arrive anyway, its key is what gets compared.
        let presented = server_public_key.public_key();
        let accepted = match &self.expected {
            Expected::Any => true,
            Expected::Pinned(pinned) => pinned.key_data() == presented.key_data(),
        };
        tracing::debug!(
            presented = %openssh_line(&presented),
            accepted,
            "server host key"
        );
        // Only the initial key exchange asks; a second call cannot happen, and
        // would be ignored rather than overwrite the first key.
        let _ = self.presented.set(presented);
        // Returning false makes russh drop the connection right after the key
        // exchange: before authentication, before any channel.
        Ok(accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIBTi7g3ozN98kRvvn6L8UP2XlTmlnB0QP7jlyQi+OSQ";

    #[test]
    fn parse_ignores_comment_and_whitespace() {
        let with_comment = parse_public_key(&format!("  {KEY}   root@host extra\n")).unwrap();
        let bare = parse_public_key(KEY).unwrap();
        assert_eq!(with_comment.key_data(), bare.key_data());
        assert_eq!(openssh_line(&with_comment), KEY);
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(parse_public_key("ssh-ed25519").is_err());
        assert!(parse_public_key("ssh-ed25519 notbase64!").is_err());
        let error = Expected::new(&HostKeyCheck::Pinned("nope".into()), "h:22").unwrap_err();
        assert!(
            matches!(error, SshError::InvalidPinnedKey { .. }),
            "{error}"
        );
    }

    #[test]
    fn pinned_algorithm_is_offered_first() {
        let defaults = russh::Preferred::DEFAULT.key.to_vec();
        let expected = Expected::new(&HostKeyCheck::Pinned(KEY.into()), "h:22").unwrap();
        let order = expected.preferred_algorithms(&defaults);
        assert_eq!(order.first(), Some(&Algorithm::Ed25519));
        assert_eq!(order.len(), defaults.len());
    }
}
