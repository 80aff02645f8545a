//! The NixOS system profile on a host: where it is, and what it points at.

use anyhow::Result;

use crate::ssh::{shell_quote, Connection};

/// The profile NixOS boots from.
pub const PROFILE: &str = "/nix/var/nix/profiles/system";

/// What a host runs now, as read over SSH.
///
/// # Errors
/// When the host cannot be asked.
pub async fn current_system(connection: &Connection) -> Result<Option<String>> {
    let command = connection.privileged(&format!(
        "readlink -f {} 2>/dev/null || true",
        shell_quote(PROFILE)
    ));
    let output = connection.exec(&command).await?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(path.starts_with("/nix/store/").then_some(path))
}
