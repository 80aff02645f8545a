//! Copying a closure: ask the host which paths it lacks, then stream only
//! those, in dependency order, over one SSH channel (`nix-store --export`
//! here, reframed into the serve protocol `nix copy` speaks, into
//! `nix-store --serve --write` there).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::nix::Closure;
use super::profile::PROFILE;
use super::serve;
use crate::ssh::{shell_quote, Connection};

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
    let command = "xargs -r nix-store --check-validity --print-invalid";
    let output = connection
        .exec_with_input(&connection.privileged(command), list.as_bytes(), &|_| {})
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

/// The host's serve session the plan opened, kept for apply's copy: a
/// handle, taken once (apply in another process opens its own).
#[derive(Debug, Clone, Default)]
pub struct Kept(Arc<std::sync::Mutex<Option<serve::Open>>>);

impl Kept {
    /// Keeps `open`.
    #[must_use]
    pub fn new(open: serve::Open) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(open))))
    }

    /// The session, unless it was taken.
    #[must_use]
    pub fn take(&self) -> Option<serve::Open> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Plans compare by what they say; the sessions they hold are not part
/// of that.
impl PartialEq for Kept {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Kept {}

/// What one look at a host found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// The system the host's profile points at (when asked, and it has one).
    pub current: Option<String>,
    /// The paths it lacks, in the order asked.
    pub missing: Vec<String>,
}

/// A host's `nix-store --serve --write`, greeted, and the system its
/// profile points at: opened as soon as the host is connected, so that the
/// session's setup and Nix's start on the host overlap the deployer's build.
#[derive(Debug)]
pub struct Greeted {
    open: serve::Open,
    current: Option<String>,
}

/// Starts the host's `nix-store --serve --write` (after one line with its
/// profile), which stays open for the survey and the copy: one session and
/// one Nix process for both, as `nix copy` does.
///
/// # Errors
/// When the host cannot be asked.
pub async fn greet(connection: &Connection) -> Result<Greeted> {
    let command = connection.privileged(&format!(
        "printf 'profile %s\\n' \"$(readlink -f {} 2>/dev/null)\"; exec {}",
        shell_quote(PROFILE),
        serve::COMMAND
    ));
    let greeted = async {
        let mut session = connection.start(&command).await?;
        session.write(serve::greeting().into()).await?;
        let line = session.read_line(64 * 1024).await?;
        let current = String::from_utf8_lossy(&line)
            .strip_prefix("profile ")
            .map(|p| p.trim().to_owned())
            .filter(|p| p.starts_with("/nix/store/"));
        let version = serve::read_greeting(&mut session).await?;
        anyhow::Ok(Greeted {
            open: serve::Open { session, version },
            current,
        })
    };
    greeted.await.map_err(asking_failed)
}

/// What the host runs and which paths of `closure` it lacks, asked of its
/// greeted `nix-store --serve` (`QueryValidPaths`); the session is handed
/// back for the copy.
///
/// # Errors
/// When the host cannot be asked.
pub async fn survey(greeted: Greeted, closure: &Closure) -> Result<(Survey, serve::Open)> {
    let Greeted { mut open, current } = greeted;
    let asked = async {
        open.session
            .write(serve::query_valid_paths(&closure.paths).into())
            .await?;
        let valid: std::collections::BTreeSet<String> = serve::read_strings(&mut open.session)
            .await?
            .into_iter()
            .collect();
        tracing::debug!(
            valid = valid.len(),
            "the host's nix-store answered which paths it has"
        );
        anyhow::Ok(valid)
    };
    let valid = asked.await.map_err(asking_failed)?;
    let missing = closure
        .paths
        .iter()
        .filter(|p| !valid.contains(*p))
        .cloned()
        .collect();
    Ok((Survey { current, missing }, open))
}

fn asking_failed(error: anyhow::Error) -> anyhow::Error {
    error.context("asking the host's nix-store which store paths it lacks; is Nix installed there?")
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

/// Sends `paths` (dependency order) to the host as `nix copy` does, over
/// the serve protocol into `nix-store --serve --write` (see [`serve`]);
/// `progress(bytes)` is called as bytes go out.
///
/// # Errors
/// When the export, the stream or the host's store fails; the message says
/// how far it got.
pub async fn send(
    connection: &Connection,
    exports: &super::export::Exports,
    closure: &Closure,
    paths: &[String],
    kept: Option<serve::Open>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Copied> {
    if paths.is_empty() {
        if let Some(open) = kept {
            open.session.close().await;
        }
        return Ok(Copied::default());
    }
    if let Some(open) = &kept {
        serve::check_version(open.version)?;
    }
    let greeted = kept.is_some();
    let infos = closure.infos_of(paths)?;
    let export = exports.open(paths).await?;
    let (framed, input) = tokio::sync::mpsc::channel(FRAMING_QUEUE);
    let framing =
        tokio::spawn(async move { serve::reframe(export.stream, &infos, !greeted, framed).await });
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let report = move |bytes: u64| {
        counter.store(bytes, Ordering::Relaxed);
        progress(bytes);
    };
    // The session the plan asked (as `nix copy` asks and sends in one), or
    // a new one.
    let result = match kept {
        Some(open) => open.session.finish(input, &report).await,
        None => {
            let command = connection.privileged(serve::COMMAND);
            connection.exec_with_chunks(&command, input, &report).await
        }
    };
    let exported = export.done.await.context("the export reader stopped")?;
    let framed = framing.await.context("the copy's framing stopped")?;
    let bytes = sent.load(Ordering::Relaxed);
    let output = result.with_context(|| {
        format!(
            "the SSH connection failed after {} of the copy",
            human_bytes(bytes)
        )
    })?;
    exported?;
    match framed {
        Ok(()) | Err(serve::ReframeError::HostGone) => {}
        Err(error) => return Err(error).context("sending the closure"),
    }
    let reply = serve::read_reply(&output.stdout, greeted);
    if let Ok(serve::Reply {
        version: Some(version),
        ..
    }) = &reply
    {
        serve::check_version(*version)?;
    }
    if !output.success() {
        bail!(
            "`{}` on the host failed ({}) after {}: {}",
            serve::COMMAND,
            status_text(&output),
            human_bytes(bytes),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let added = reply?.added;
    if added != paths.len() {
        bail!("the host added {added} of {} store paths", paths.len());
    }
    Ok(Copied {
        paths: added,
        bytes,
    })
}

/// Chunks between the framing and the SSH channel.
const FRAMING_QUEUE: usize = 8;

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
