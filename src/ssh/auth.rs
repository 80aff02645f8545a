//! Public-key authentication: identity files first, then the ssh-agent.
//! Every attempt is recorded so that a failure can say what was tried.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::AgentAuthError;

use super::host_key::Handler;
use super::SshError;

/// Which credentials to offer the host, in order: identity files, then the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// OpenSSH private key files (unencrypted; ed25519, ECDSA or RSA), tried in order.
    pub identity_files: Vec<PathBuf>,
    /// Then also try the keys of the ssh-agent at `agent_socket` or `$SSH_AUTH_SOCK`.
    pub use_agent: bool,
    /// The agent's socket; `None` means `$SSH_AUTH_SOCK`.
    pub agent_socket: Option<PathBuf>,
}

/// Authenticates `user` on an established session; `host` is `host:port`, for errors.
pub(crate) async fn authenticate(
    handle: &mut Handle<Handler>,
    user: &str,
    host: &str,
    auth: &Auth,
) -> Result<(), SshError> {
    let mut attempt = Attempt {
        handle,
        user,
        rsa_hash: None,
        tried: Vec::new(),
    };
    let authenticated = attempt.identity_files(&auth.identity_files).await
        || (auth.use_agent && attempt.agent(auth.agent_socket.as_deref()).await);
    if authenticated {
        tracing::debug!(host, user, "authenticated");
        return Ok(());
    }
    Err(SshError::Auth {
        user: user.to_owned(),
        host: host.to_owned(),
        tried: attempt.tried,
    })
}

/// Whether to keep trying more keys after one attempt.
enum Outcome {
    Accepted,
    Rejected,
    /// The host hung up (for example after too many attempts): stop trying.
    Closed,
}

struct Attempt<'a> {
    handle: &'a mut Handle<Handler>,
    user: &'a str,
    /// The RSA signature hash the server prefers, asked once, only when an RSA key comes up.
    rsa_hash: Option<Option<HashAlg>>,
    tried: Vec<String>,
}

impl Attempt<'_> {
    /// Tries each identity file; true once one is accepted.
    async fn identity_files(&mut self, files: &[PathBuf]) -> bool {
        for path in files {
            let key = match russh::keys::load_secret_key(path, None) {
                Ok(key) => key,
                Err(error) => {
                    self.tried
                        .push(format!("{}: not usable ({error})", path.display()));
                    continue;
                }
            };
            let label = format!("{} ({})", path.display(), describe(key.public_key()));
            let hash = self.hash_for(key.public_key()).await;
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            let result = self
                .handle
                .authenticate_publickey(self.user, key)
                .await
                .map_err(|error| error.to_string());
            match self.record(label, result) {
                Outcome::Accepted => return true,
                Outcome::Rejected => {}
                Outcome::Closed => return false,
            }
        }
        false
    }

    /// Tries every plain key the agent holds; true once one is accepted.
    async fn agent(&mut self, socket: Option<&Path>) -> bool {
        let socket = match socket {
            Some(socket) => socket.to_owned(),
            None => match std::env::var_os("SSH_AUTH_SOCK") {
                Some(socket) if !socket.is_empty() => PathBuf::from(socket),
                _ => {
                    self.tried
                        .push("ssh-agent: SSH_AUTH_SOCK is not set".to_owned());
                    return false;
                }
            },
        };
        let mut agent = match AgentClient::connect_uds(&socket).await {
            Ok(agent) => agent,
            Err(error) => {
                self.tried.push(format!(
                    "ssh-agent at {}: cannot connect ({error})",
                    socket.display()
                ));
                return false;
            }
        };
        if let Some(binding) = self.handle.agent_session_binding() {
            // Needed only for destination-constrained keys; agents without the
            // extension refuse it, which is fine.
            if let Err(error) = agent.bind_session(binding, false).await {
                tracing::debug!(%error, "ssh-agent did not bind the session");
            }
        }
        let identities = match agent.request_identities().await {
            Ok(identities) => identities,
            Err(error) => {
                self.tried.push(format!(
                    "ssh-agent at {}: cannot list keys ({error})",
                    socket.display()
                ));
                return false;
            }
        };
        if identities.is_empty() {
            self.tried
                .push(format!("ssh-agent at {}: holds no keys", socket.display()));
        }
        for identity in identities {
            let AgentIdentity::PublicKey { key, .. } = identity else {
                self.tried
                    .push("ssh-agent certificate: skipped (certificates are not supported)".into());
                continue;
            };
            let label = format!("ssh-agent key {}", describe(&key));
            let hash = self.hash_for(&key).await;
            let result = self
                .handle
                .authenticate_publickey_with(self.user, key, hash, &mut agent)
                .await;
            let result = match result {
                Ok(result) => Ok(result),
                Err(AgentAuthError::Key(error)) => {
                    // The session is still usable: try the next key.
                    self.tried
                        .push(format!("{label}: the agent could not sign ({error})"));
                    continue;
                }
                Err(error) => Err(error.to_string()),
            };
            match self.record(label, result) {
                Outcome::Accepted => return true,
                Outcome::Rejected => {}
                Outcome::Closed => return false,
            }
        }
        false
    }

    /// The signature hash for `key`: the server's best for RSA, none otherwise.
    async fn hash_for(&mut self, key: &PublicKey) -> Option<HashAlg> {
        if !key.algorithm().is_rsa() {
            return None;
        }
        if self.rsa_hash.is_none() {
            let best = self.handle.best_supported_rsa_hash().await;
            self.rsa_hash = Some(best.ok().flatten().flatten());
        }
        self.rsa_hash.flatten()
    }

    fn record(&mut self, label: String, result: Result<AuthResult, String>) -> Outcome {
        match result {
            Ok(AuthResult::Success) => Outcome::Accepted,
            Ok(AuthResult::Failure { .. }) => {
                self.tried.push(format!("{label}: rejected"));
                Outcome::Rejected
            }
            Err(error) => {
                self.tried.push(format!(
                    "{label}: failed ({error}; the host may have closed the connection \
                     after too many attempts)"
                ));
                Outcome::Closed
            }
        }
    }
}

/// `"ssh-ed25519 SHA256:…"`: enough to recognise a key without printing it.
fn describe(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256))
}
