//! Activation with rollback, deployer side.
//!
//! The helper script (`activate.sh`) runs on the host, detached from the SSH
//! session. After it activated, prov confirms over a *new* SSH connection by
//! deleting the canary file; if no confirmation arrives within the confirm
//! timeout (the new system broke SSH, networking, the host hangs), the host
//! rolls itself back. prov then says so and the run fails.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::target::{fresh, Endpoint};
use crate::spec::Goal;
use crate::ssh::{shell_quote, Connection, Options};

/// The helper script uploaded to every host.
const SCRIPT: &str = include_str!("activate.sh");
/// Where the script and per-activation directories live on the host.
const HOME: &str = "/nix/var/prov";
/// How long one status poll over an existing connection may take.
const POLL: Duration = Duration::from_secs(5);
/// The longest an activation (switch-to-configuration) may run.
const ACTIVATION_LIMIT: Duration = Duration::from_secs(600);

/// How an activation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Active and confirmed; `generation` for switch and boot.
    Confirmed {
        /// The new profile generation.
        generation: Option<u64>,
    },
    /// The host rolled back to `previous` (confirmation did not arrive, or
    /// activation failed).
    RolledBack {
        /// Why.
        reason: String,
        /// The system active again, as far as prov could see.
        previous: Option<String>,
    },
}

/// One activation on one host.
#[derive(Debug)]
pub struct Activation {
    /// The directory on the host holding this activation's progress.
    pub dir: String,
    /// Seconds the host waits for confirmation.
    pub confirm: Duration,
}

/// Runs `privileged(command)` through `connection`, bounded by `limit`.
async fn exec(connection: &Connection, command: &str, limit: Duration) -> Result<(bool, String)> {
    let command = connection.privileged(command);
    let output = tokio::time::timeout(limit, connection.exec(&command))
        .await
        .with_context(|| format!("no answer within {}s", limit.as_secs()))??;
    Ok((
        output.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// Starts activating `system` with `goal` on the host behind `connection`,
/// detached; returns at once.
///
/// # Errors
/// When the script cannot be uploaded or started.
pub async fn start(
    connection: &Connection,
    system: &str,
    goal: Goal,
    confirm: Duration,
) -> Result<Activation> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
    let dir = format!("{HOME}/activations/{stamp}-{}", std::process::id());
    let install = format!("mkdir -p {HOME} && cat > {HOME}/activate.sh.tmp && mv {HOME}/activate.sh.tmp {HOME}/activate.sh");
    let output = connection
        .exec_with_input(&connection.privileged(&install), SCRIPT.as_bytes(), &|_| {})
        .await
        .context("uploading the activation helper")?;
    if !output.success() {
        bail!(
            "installing the activation helper failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let run = format!(
        "setsid -f sh {HOME}/activate.sh run {} {} {} {} </dev/null >/dev/null 2>&1",
        shell_quote(&dir),
        shell_quote(system),
        goal.as_str(),
        confirm.as_secs()
    );
    let (started, _) = exec(connection, &run, POLL)
        .await
        .context("starting the activation")?;
    if !started {
        bail!("starting the activation failed; is `setsid` (util-linux) installed on the host?");
    }
    Ok(Activation { dir, confirm })
}

/// Reads `DIR/NAME` on the host (empty when missing).
async fn read(connection: &Connection, dir: &str, name: &str) -> Result<String> {
    let (_, out) = exec(
        connection,
        &format!("cat {}/{name} 2>/dev/null || true", shell_quote(dir)),
        POLL,
    )
    .await?;
    Ok(out.trim().to_owned())
}

/// Waits for the activation to finish, confirms it over a new connection,
/// and reports how it ended.
///
/// # Errors
/// When the outcome cannot be determined at all.
pub async fn finish(
    connection: &Connection,
    endpoint: &Endpoint,
    activation: &Activation,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut activated_at = None;
    // Wait for switch-to-configuration to finish, over the open connection.
    while started.elapsed() < ACTIVATION_LIMIT {
        match read(connection, &activation.dir, "activated").await {
            Ok(status) if !status.is_empty() => {
                activated_at = Some(Instant::now());
                if status != "0" {
                    let result =
                        wait_result(connection, &activation.dir, Duration::from_secs(60)).await;
                    let previous = read(connection, &activation.dir, "previous").await.ok();
                    let log = read(connection, &activation.dir, "log")
                        .await
                        .unwrap_or_default();
                    return Ok(Outcome::RolledBack {
                        reason: format!(
                            "switch-to-configuration exited with status {status} ({}); its output:\n{}",
                            result.unwrap_or_default(),
                            tail(&log, 20)
                        ),
                        previous: previous.filter(|p| !p.is_empty()),
                    });
                }
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(error) => {
                tracing::warn!(host = %endpoint.address, "the host stopped answering during activation: {error:#}");
                break;
            }
        }
    }

    if activation.confirm.is_zero() {
        let generation = read(connection, &activation.dir, "generation")
            .await
            .ok()
            .and_then(|g| g.parse().ok());
        return Ok(Outcome::Confirmed { generation });
    }

    // Confirm over a NEW connection before the host's deadline.
    let deadline =
        activated_at.unwrap_or(started) + activation.confirm.saturating_sub(Duration::from_secs(1));
    let mut last_error = String::from("the host did not answer");
    while Instant::now() < deadline {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let options = Options {
            connect_timeout: remaining
                .min(Duration::from_secs(5))
                .max(Duration::from_millis(500)),
            keepalive: Duration::from_secs(5),
            ..Options::default()
        };
        match tokio::time::timeout(
            remaining + Duration::from_millis(100),
            confirm(endpoint, &activation.dir, options),
        )
        .await
        {
            Ok(Ok(generation)) => return Ok(Outcome::Confirmed { generation }),
            Ok(Err(error)) => last_error = format!("{error:#}"),
            Err(_) => last_error = "confirmation timed out".to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Not confirmed: the host rolls back on its own. Check that it did.
    let check_at = activated_at.unwrap_or(started) + activation.confirm;
    let previous = verify_rollback(endpoint, &activation.dir, check_at).await;
    Ok(Outcome::RolledBack {
        reason: format!(
            "prov could not confirm the new system over a new SSH connection within {}s ({last_error})",
            activation.confirm.as_secs()
        ),
        previous,
    })
}

/// Deletes the canary over a new connection and waits for `confirmed`.
async fn confirm(endpoint: &Endpoint, dir: &str, options: Options) -> Result<Option<u64>> {
    let connection = fresh(endpoint, options).await?;
    let (removed, _) = exec(
        &connection,
        &format!("rm {}/canary", shell_quote(dir)),
        POLL,
    )
    .await?;
    if !removed {
        bail!("the confirmation window had already closed");
    }
    let result = wait_result(&connection, dir, Duration::from_secs(10)).await?;
    if result != "confirmed" {
        bail!("the host reports `{result}` after confirmation");
    }
    let generation = read(&connection, dir, "generation").await?.parse().ok();
    connection.close().await;
    Ok(generation)
}

/// Polls DIR/result until it is written (bounded).
async fn wait_result(connection: &Connection, dir: &str, limit: Duration) -> Result<String> {
    let started = Instant::now();
    loop {
        let result = read(connection, dir, "result").await?;
        if !result.is_empty() {
            return Ok(result);
        }
        if started.elapsed() > limit {
            bail!(
                "the activation helper reported no result within {}s",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After the host's deadline, connects again and reads what it rolled back
/// to. Bounded: gives up a minute after `check_at`.
async fn verify_rollback(endpoint: &Endpoint, dir: &str, check_at: Instant) -> Option<String> {
    tokio::time::sleep(
        check_at
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(3600)),
    )
    .await;
    let give_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < give_up {
        let options = Options {
            connect_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(5),
            ..Options::default()
        };
        if let Ok(connection) = fresh(endpoint, options).await {
            let result = read(&connection, dir, "result").await.unwrap_or_default();
            if result.contains("rolled-back") {
                let previous = read(&connection, dir, "previous")
                    .await
                    .ok()
                    .filter(|p| !p.is_empty());
                connection.close().await;
                return previous;
            }
            connection.close().await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Rolls back a confirmed activation (after a failed health check).
///
/// # Errors
/// When the host cannot be told to roll back.
pub async fn rollback(connection: &Connection, activation: &Activation) -> Result<Option<String>> {
    let command = format!(
        "rm -f {dir}/result; sh {HOME}/activate.sh rollback {dir}",
        dir = shell_quote(&activation.dir)
    );
    let (done, _) = exec(connection, &command, Duration::from_secs(300)).await?;
    if !done {
        bail!(
            "the rollback on the host failed; see {}/log there",
            activation.dir
        );
    }
    Ok(read(connection, &activation.dir, "previous")
        .await
        .ok()
        .filter(|p| !p.is_empty()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
