//! The SSH layer: one authenticated russh client session per host, with the
//! host key pinned (never accepted blindly), public-key authentication from
//! identity files or the ssh-agent, optional jump hosts, and commands run on
//! their own channels so that many can share one connection at once.
//!
//! ```text
//! connect(target, check, auth, options)
//!   [jump: connect to the jump host first, open direct-tcpip to target]
//!   TCP connect -> key exchange -> check_server_key (pin) -> authenticate
//!   all within options.connect_timeout, per hop
//! exec / exec_checked / exec_with_input: one session channel per command
//! ```

mod auth;
mod error;
mod exec;
mod host_key;
mod quickack;
mod session;
mod stream;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::PublicKey;
use russh::{ChannelOpenFailure, Disconnect, Preferred};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

pub use auth::Auth;
pub use error::SshError;
pub use exec::ExecOutput;
pub use host_key::HostKeyCheck;
/// Quotes a word for the remote POSIX shell (the provider API's one rule).
pub use prov_provider::shell::quote as shell_quote;
pub use session::Session;
pub use stream::{Request, Stream, Terminal, WindowSize};

use host_key::{openssh_line, Expected, Handler};

/// Where to connect, as whom, and through which jump host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address.
    pub host: String,
    /// TCP port of sshd, usually 22.
    pub port: u16,
    /// Remote user; anything but `root` needs [`Connection::privileged`] for root's work.
    pub user: String,
    /// Reach this target through a jump host (which may itself have one).
    pub jump: Option<Box<JumpHost>>,
}

impl Target {
    /// A directly reachable target.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        Target {
            host: host.into(),
            port,
            user: user.into(),
            jump: None,
        }
    }

    /// `host:port` (`[host]:port` for IPv6 literals), as used in logs and errors.
    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A jump host and how to check its own host key; the same [`Auth`] is used for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    /// The jump host itself.
    pub target: Target,
    /// Its host key check (independent of the final target's).
    pub check: HostKeyCheck,
}

/// Timing knobs for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Limit for TCP connect + SSH handshake + authentication, per hop (default 10 s).
    pub connect_timeout: Duration,
    /// Send a keepalive after this much silence; 3 unanswered ones drop the connection (default 15 s, zero disables).
    pub keepalive: Duration,
    /// Most commands running at once on one connection; more wait their turn (default 10, OpenSSH's MaxSessions).
    pub max_channels: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            max_channels: 10,
        }
    }
}

/// Unanswered keepalives after which a connection counts as dead.
const KEEPALIVE_MAX: usize = 3;

/// One authenticated SSH session to a host; share it (`Arc`) to run many commands concurrently.
pub struct Connection {
    handle: Handle<Handler>,
    /// `host:port`.
    address: String,
    user: String,
    host_key: String,
    channels: std::sync::Arc<Semaphore>,
    /// Declared after `handle`, so the tunnelled session is dropped first.
    jump: Option<Box<Connection>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .field("user", &self.user)
            .field("host_key", &self.host_key)
            .field("jump", &self.jump)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects (through the jump host, if any), checks the host key, and authenticates.
    pub async fn connect(
        target: &Target,
        check: &HostKeyCheck,
        auth: &Auth,
        options: &Options,
    ) -> Result<Connection, SshError> {
        connect_hop(target, check, auth, options).await
    }

    /// The host key the server presented, `"ssh-ed25519 AAAA…"` (no comment); record it after `AcceptNew`.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// The host key the jump host presented, if the connection went through one.
    pub fn jump_host_key(&self) -> Option<&str> {
        self.jump.as_deref().map(Connection::host_key)
    }

    /// `host:port` of the target.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The remote user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// True when logged in as `root`.
    pub fn is_root(&self) -> bool {
        self.user == "root"
    }

    /// `command` run as root: unchanged when logged in as root, else `sudo -n -- sh -c '<command>'`.
    pub fn privileged(&self, command: &str) -> String {
        exec::privileged_command(self.is_root(), command)
    }

    /// Says goodbye to the host (and the jump host); errors are ignored, the session is ending anyway.
    pub async fn close(self) {
        tracing::debug!(host = %self.address, "ssh disconnect");
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
        drop(self.handle);
        if let Some(jump) = self.jump {
            Box::pin(jump.close()).await;
        }
    }
}

/// Boxed so that a jump host's own jump host can recurse.
fn connect_hop<'a>(
    target: &'a Target,
    check: &'a HostKeyCheck,
    auth: &'a Auth,
    options: &'a Options,
) -> Pin<Box<dyn Future<Output = Result<Connection, SshError>> + Send + 'a>> {
    Box::pin(async move {
        let address = target.address();
        let expected = Expected::new(check, &address)?;
        let jump = match &target.jump {
            Some(jump) => Some(Box::new(
                connect_hop(&jump.target, &jump.check, auth, options).await?,
            )),
            None => None,
        };
        let hop = async {
            match &jump {
                None => {
                    let stream =
                        tokio::net::TcpStream::connect((target.host.as_str(), target.port))
                            .await
                            .map_err(|source| SshError::Connect {
                                host: address.clone(),
                                source,
                            })?;
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "set_nodelay failed");
                    }
                    let stream = quickack::QuickAck::new(stream);
                    establish(stream, target, &address, &expected, auth, options).await
                }
                Some(jump) => {
                    let stream = jump.tunnel(target, &address).await?;
                    establish(stream, target, &address, &expected, auth, options).await
                }
            }
        };
        tracing::debug!(host = %address, user = %target.user, "ssh connect");
        let (handle, host_key) = tokio::time::timeout(options.connect_timeout, hop)
            .await
            .map_err(|_| SshError::Timeout {
                host: address.clone(),
                timeout: options.connect_timeout,
            })??;
        Ok(Connection {
            handle,
            address,
            user: target.user.clone(),
            host_key,
            channels: std::sync::Arc::new(Semaphore::new(options.max_channels.max(1))),
            jump,
        })
    })
}

impl Connection {
    /// A direct-tcpip channel from this (jump) host to `target`, as a byte stream.
    async fn tunnel(
        &self,
        target: &Target,
        address: &str,
    ) -> Result<impl AsyncRead + AsyncWrite + Unpin + Send + 'static, SshError> {
        tracing::debug!(jump = %self.address, host = %address, "opening tunnel");
        let channel = self
            .handle
            .channel_open_direct_tcpip(target.host.as_str(), u32::from(target.port), "127.0.0.1", 0)
            .await
            .map_err(|error| SshError::Tunnel {
                host: address.to_owned(),
                jump: self.address.clone(),
                reason: match error {
                    russh::Error::ChannelOpenFailure(failure) => describe_open_failure(failure),
                    other => other.to_string(),
                },
            })?;
        Ok(channel.into_stream())
    }
}

fn describe_open_failure(failure: ChannelOpenFailure) -> String {
    match failure {
        ChannelOpenFailure::AdministrativelyProhibited => {
            "administratively prohibited (is AllowTcpForwarding off on the jump host?)".to_owned()
        }
        ChannelOpenFailure::ConnectFailed => {
            "the jump host could not connect (refused or unreachable from there)".to_owned()
        }
        ChannelOpenFailure::UnknownChannelType => "direct-tcpip is not supported".to_owned(),
        ChannelOpenFailure::ResourceShortage => "resource shortage on the jump host".to_owned(),
        ChannelOpenFailure::Other { code, reason } => format!("{reason} (code {code})"),
    }
}

/// Runs the SSH handshake over `stream`, checks the host key, authenticates.
async fn establish<S>(
    stream: S,
    target: &Target,
    address: &str,
    expected: &Expected,
    auth: &Auth,
    options: &Options,
) -> Result<(Handle<Handler>, String), SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let presented: Arc<OnceLock<PublicKey>> = Arc::new(OnceLock::new());
    let handler = Handler::new(expected.clone(), Arc::clone(&presented));
    let config = Arc::new(client_config(expected, options));
    let handshake = client::connect_stream(config, stream, handler).await;
    let mut handle = match handshake {
        Ok(handle) => handle,
        Err(source) => {
            if let (Expected::Pinned(pinned), Some(key)) = (expected, presented.get()) {
                if pinned.key_data() != key.key_data() {
                    return Err(SshError::HostKeyMismatch {
                        host: address.to_owned(),
                        expected: openssh_line(pinned),
                        presented: openssh_line(key),
                    });
                }
            }
            return Err(SshError::Handshake {
                host: address.to_owned(),
                source,
            });
        }
    };
    let Some(host_key) = presented.get().map(openssh_line) else {
        // russh always asks the handler during the initial key exchange.
        return Err(SshError::Handshake {
            host: address.to_owned(),
            source: russh::Error::UnknownKey,
        });
    };
    auth::authenticate(&mut handle, &target.user, address, auth).await?;
    Ok((handle, host_key))
}

/// AES-GCM first: with AES instructions it streams closures markedly faster
/// than ChaCha20-Poly1305 (russh's default first choice); the rest as russh
/// orders them.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

fn client_config(expected: &Expected, options: &Options) -> client::Config {
    let mut preferred = Preferred::default();
    preferred.key = Cow::Owned(expected.preferred_algorithms(&preferred.key));
    preferred.cipher = Cow::Borrowed(CIPHERS);
    client::Config {
        preferred,
        // A long quiet command (a build, a copy) is not a reason to hang up;
        // keepalives notice a dead host instead.
        inactivity_timeout: None,
        keepalive_interval: (!options.keepalive.is_zero()).then_some(options.keepalive),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        ..client::Config::default()
    }
}
