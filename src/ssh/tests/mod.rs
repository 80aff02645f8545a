//! Tests against real OpenSSH servers started per test (see `sshd.rs`); no mocks.

mod connect;
mod exec;
mod sshd;

use self::sshd::Sshd;
use super::{Connection, Options};

/// Connects to `sshd` as root with its pinned key and client key.
async fn connect(sshd: &Sshd) -> Connection {
    Connection::connect(
        &sshd.target(),
        &sshd.pinned(),
        &sshd.auth(),
        &Options::default(),
    )
    .await
    .unwrap()
}
