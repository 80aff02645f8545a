//! Copying a closure: ask the host which paths it lacks, then stream only
//! those, in dependency order, over one SSH channel
//! (`nix-store --export` here into `nix-store --import` there).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::nix::Closure;
use crate::ssh::Connection;

/// What a copy moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Store paths imported on the host.
    pub paths: usize,
    /// Bytes of the export stream sent.
    pub bytes: u64,
}

/// The paths of `closure` the host does not have, in dependency order.
///
/// # Errors
/// When the host cannot be asked.
pub async fn missing(connection: &Connection, closure: &Closure) -> Result<Vec<String>> {
    missing_of(connection, &closure.paths).await
}

/// Which of `paths` the host does not have (order kept).
///
/// # Errors
/// When the host cannot be asked.
pub async fn missing_of(connection: &Connection, paths: &[String]) -> Result<Vec<String>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let list = paths.join("\n") + "\n";
    let command = connection.privileged("xargs -r nix-store --check-validity --print-invalid");
    let output = connection
        .exec_with_input(&command, list.as_bytes(), &|_| {})
        .await
        .context("asking the host which store paths it lacks")?;
    if !output.success() {
        bail!(
            "`nix-store --check-validity` failed on the host ({}): {}; is Nix installed there?",
            status_text(&output),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let invalid: std::collections::BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    Ok(paths
        .iter()
        .filter(|p| invalid.contains(*p))
        .cloned()
        .collect())
}

/// Lets the host fetch `paths` from its own substituters (best effort).
pub async fn substitute(connection: &Connection, paths: &[String]) {
    if paths.is_empty() {
        return;
    }
    let list = paths.join("\n") + "\n";
    let command = connection.privileged("xargs -r nix-store --realise >/dev/null 2>&1 || true");
    if let Err(error) = connection
        .exec_with_input(&command, list.as_bytes(), &|_| {})
        .await
    {
        tracing::debug!("substitution on the host failed: {error:#}");
    }
}

/// Has the host substitute `paths` from the binary cache at `substituter`,
/// trusting `public_key` (and no lookup it cached as missing). Best effort:
/// what it could not fetch is still missing afterwards.
pub async fn substitute_from(
    connection: &Connection,
    paths: &[String],
    substituter: &str,
    public_key: &str,
) {
    if paths.is_empty() {
        return;
    }
    let list = paths.join("\n") + "\n";
    let quote = prov_provider::shell::quote_always;
    let command = connection.privileged(&format!(
        "xargs -r nix-store --realise --option substituters {} --option trusted-public-keys {} \
         --option narinfo-cache-negative-ttl 0 >/dev/null || true",
        quote(substituter),
        quote(public_key)
    ));
    match connection
        .exec_with_input(&command, list.as_bytes(), &|_| {})
        .await
    {
        Ok(output) => tracing::debug!(
            "substitution from the cache: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => tracing::debug!("substitution from the cache failed: {error:#}"),
    }
}

/// Streams `paths` (dependency order) to the host; `progress(bytes)` is
/// called as bytes go out.
///
/// # Errors
/// When the export, the stream or the import fails; the message says how far
/// it got.
pub async fn send(
    connection: &Connection,
    exports: &super::export::Exports,
    paths: &[String],
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Copied> {
    if paths.is_empty() {
        return Ok(Copied::default());
    }
    let export = exports.open(paths).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let report = move |bytes: u64| {
        counter.store(bytes, Ordering::Relaxed);
        progress(bytes);
    };
    let command = connection.privileged("nix-store --import");
    let result = connection
        .exec_with_input(&command, export.stream, &report)
        .await;
    let exported = export.done.await.context("the export reader stopped")?;
    let bytes = sent.load(Ordering::Relaxed);
    let output = result.with_context(|| {
        format!(
            "the SSH connection failed after {} of the copy",
            human_bytes(bytes)
        )
    })?;
    exported?;
    if !output.success() {
        bail!(
            "nix-store --import on the host failed ({}) after {}: {}",
            status_text(&output),
            human_bytes(bytes),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let imported = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with("/nix/store/"))
        .count();
    if imported != paths.len() {
        bail!(
            "the host imported {imported} of {} store paths",
            paths.len()
        );
    }
    Ok(Copied {
        paths: imported,
        bytes,
    })
}

/// `exit 3`, or `killed by signal KILL`.
#[must_use]
pub fn status_text(output: &crate::ssh::ExecOutput) -> String {
    match (&output.status, &output.signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "no exit status".to_owned(),
    }
}

/// `3.4 MiB`.
#[must_use]
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
