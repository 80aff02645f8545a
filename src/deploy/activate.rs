//! Activation with rollback, deployer side.
//!
//! The helper script (`activate.sh`) runs on the host, detached from the SSH
//! session. After it activated, prov confirms over a *new* SSH connection by
//! deleting the canary file; if no confirmation arrives within the confirm
//! timeout (the new system broke SSH, networking, the host hangs), the host
//! rolls itself back. prov then says so and the run fails.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::target::{self, fresh, Endpoint};
use crate::spec::Goal;
use crate::ssh::{shell_quote, Connection, HostKeyCheck, Options};

/// The helper script uploaded to every host.
const SCRIPT: &str = include_str!("activate.sh");
/// Where the script and per-activation directories live on the host.
const HOME: &str = "/nix/var/prov";
/// How long one status poll over an existing connection may take.
const POLL: Duration = Duration::from_secs(5);
/// How long installing and starting the helper may take (a few processes;
/// slow only on an emulated host).
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long the confirming command waits for the host's result before prov
/// reads it over its own connection instead.
const CONFIRM_RESULT: Duration = Duration::from_secs(5);
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

/// What [`start`] found on the host.
#[derive(Debug)]
pub enum Started {
    /// The profile already points at the system (switch, boot): nothing was
    /// started.
    AlreadyActive,
    /// Activation is running, detached.
    Running(Activation),
}

/// Installs the helper and starts activating `system` with `goal` on the
/// host behind `connection`, detached, in one command; returns at once.
///
/// # Errors
/// When the helper cannot be installed or started.
pub async fn start(
    connection: &Connection,
    system: &str,
    goal: Goal,
    confirm: Duration,
) -> Result<Started> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
    let dir = format!("{HOME}/activations/{stamp}-{}", std::process::id());
    let command = format!(
        "mkdir -p {HOME} && cat > {HOME}/activate.sh.tmp && mv {HOME}/activate.sh.tmp {HOME}/activate.sh \
         && sh {HOME}/activate.sh start {} {} {} {}",
        shell_quote(&dir),
        shell_quote(system),
        goal.as_str(),
        confirm.as_secs()
    );
    let output = tokio::time::timeout(
        START_LIMIT,
        connection.exec_with_input(&connection.privileged(&command), SCRIPT.as_bytes(), &|_| {}),
    )
    .await
    .with_context(|| {
        format!(
            "starting the activation: no answer within {}s",
            START_LIMIT.as_secs()
        )
    })?
    .context("starting the activation")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match (output.success(), stdout.trim()) {
        (true, "active") => Ok(Started::AlreadyActive),
        (true, "started") => Ok(Started::Running(Activation { dir, confirm })),
        _ => bail!(
            "starting the activation failed ({}): {}; is `setsid` (util-linux) installed on the host?",
            super::copy::status_text(&output),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
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

/// How long one `activate.sh wait` blocks on the host before prov asks again
/// (the command itself may take two [`POLL`]s longer on a slow host).
const WAIT_STEP: Duration = Duration::from_secs(20);
/// How long after the host's confirmation deadline prov keeps trying to read
/// the host's result before it gives up saying it cannot tell.
const RESULT_GRACE: Duration = Duration::from_secs(60);

/// What the host reported when activation finished (`activate.sh wait`).
#[derive(Debug, PartialEq, Eq)]
enum Finished {
    /// switch-to-configuration exited with this status; no result yet.
    Activated(String),
    /// The host's final result.
    Result(String),
}

/// Commands to one host over the pooled connection, or, once that one has
/// failed, over connections of its own (opened again whenever one drops).
/// A dropped connection is never an answer: the next command reconnects.
struct Link<'a> {
    pooled: &'a Connection,
    endpoint: &'a Endpoint,
    pooled_failed: bool,
    own: Option<Connection>,
}

impl<'a> Link<'a> {
    fn new(pooled: &'a Connection, endpoint: &'a Endpoint) -> Self {
        Link {
            pooled,
            endpoint,
            pooled_failed: false,
            own: None,
        }
    }

    /// Runs `command` (privileged) within `limit`. On failure the
    /// connection used is given up; the next call uses a new one.
    async fn run(&mut self, command: &str, limit: Duration) -> Result<(bool, String)> {
        if !self.pooled_failed {
            let answer = exec(self.pooled, command, limit).await;
            if let Err(error) = &answer {
                tracing::info!(host = %self.endpoint.address, "the deploy connection failed, connecting again: {error:#}");
                self.pooled_failed = true;
            }
            return answer;
        }
        if self.own.is_none() {
            self.own = Some(fresh(self.endpoint, target::options()).await?);
        }
        let Some(connection) = &self.own else {
            bail!("no connection");
        };
        let answer = exec(connection, command, limit).await;
        if let Err(error) = &answer {
            tracing::info!(host = %self.endpoint.address, "lost the connection, connecting again: {error:#}");
            if let Some(c) = self.own.take() {
                c.close().await;
            }
        }
        answer
    }

    /// Reads `DIR/NAME` on the host (empty when missing or unreadable).
    async fn read(&mut self, dir: &str, name: &str) -> String {
        let command = format!("cat {}/{name} 2>/dev/null || true", shell_quote(dir));
        for _ in 0..2 {
            if let Ok((_, out)) = self.run(&command, POLL).await {
                return out.trim().to_owned();
            }
        }
        String::new()
    }

    async fn close(self) {
        if let Some(c) = self.own {
            c.close().await;
        }
    }
}

/// Waits for the activation to finish, confirms it over a new connection,
/// and reports how it ended: always what the host itself recorded in its
/// result file, never a guess.
///
/// # Errors
/// When the activation failed before anything was activated (the profile
/// could not be set), or when the host's result cannot be read at all.
pub async fn finish(
    connection: &Connection,
    endpoint: &Endpoint,
    activation: &Activation,
) -> Result<Outcome> {
    // Every connection after the first checks the key the first one
    // presented, also when that one was accepted as new.
    let mut endpoint = Endpoint {
        check: HostKeyCheck::Pinned(connection.host_key().to_owned()),
        ..endpoint.clone()
    };
    if let (Some(jump), Some(key)) = (endpoint.target.jump.as_mut(), connection.jump_host_key()) {
        jump.check = HostKeyCheck::Pinned(key.to_owned());
    }
    let mut link = Link::new(connection, &endpoint);
    let outcome = finish_over(&mut link, &endpoint, activation).await;
    link.close().await;
    outcome
}

async fn finish_over(
    link: &mut Link<'_>,
    endpoint: &Endpoint,
    activation: &Activation,
) -> Result<Outcome> {
    let finished = wait_finished(link, activation).await?;
    // The host's confirmation window opens now, when activation has ended.
    let activated_at = Instant::now();
    let mut unconfirmed = None;
    let mut reported = None;
    if matches!(&finished, Finished::Activated(status) if status == "0")
        && !activation.confirm.is_zero()
    {
        match try_confirm(endpoint, activation, activated_at).await {
            Ok(report) => reported = report,
            Err(error) => {
                tracing::info!(host = %endpoint.address, "not confirmed: {error:#}");
                unconfirmed = Some(format!(
                    "prov could not confirm the new system over a new SSH connection within {}s ({error:#})",
                    activation.confirm.as_secs()
                ));
            }
        }
    }
    let (result, generation) = match (finished, reported) {
        (Finished::Result(result), _) => (result, None),
        (Finished::Activated(_), Some(report)) => (report.result, report.generation),
        (Finished::Activated(_), None) => {
            (read_result(link, activation, activated_at).await?, None)
        }
    };
    if result == "failed-profile" {
        let log = link.read(&activation.dir, "log").await;
        bail!(
            "setting the system profile on the host failed; nothing was activated:\n{}",
            tail(&log, 20)
        );
    }
    Ok(outcome(link, activation, &result, generation, unconfirmed).await)
}

/// Waits (bounded) until the host says activation has finished.
async fn wait_finished(link: &mut Link<'_>, activation: &Activation) -> Result<Finished> {
    let started = Instant::now();
    let command = format!(
        "sh {HOME}/activate.sh wait {} {}",
        shell_quote(&activation.dir),
        WAIT_STEP.as_secs()
    );
    let mut last_error = String::new();
    while started.elapsed() < ACTIVATION_LIMIT {
        match link.run(&command, WAIT_STEP + 2 * POLL).await {
            Ok((_, out)) => {
                let out = out.trim();
                if let Some(status) = out.strip_prefix("activated ") {
                    return Ok(Finished::Activated(status.trim().to_owned()));
                }
                if let Some(result) = out.strip_prefix("result ") {
                    return Ok(Finished::Result(result.trim().to_owned()));
                }
            }
            Err(error) => {
                last_error = format!("{error:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    bail!(
        "activation did not finish within {}s{}",
        ACTIVATION_LIMIT.as_secs(),
        if last_error.is_empty() {
            String::new()
        } else {
            format!(" (last error: {last_error})")
        }
    )
}

/// Connection settings for one confirmation attempt with `remaining` time
/// left: the pool's connect timeout where time allows.
fn confirm_options(remaining: Duration) -> Options {
    let pool = target::options();
    Options {
        connect_timeout: remaining
            .min(pool.connect_timeout)
            .max(Duration::from_millis(500)),
        ..pool
    }
}

/// The host's own account, as the confirming command printed it.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    /// The host's result (`confirmed`, `rolled-back`, …).
    result: String,
    /// The new profile generation, when there is one.
    generation: Option<u64>,
}

/// Confirms over new connections until it works, the host closes the window
/// (the canary is gone), or the host's deadline has passed. Returns the
/// host's result when the confirming command could already read it.
async fn try_confirm(
    endpoint: &Endpoint,
    activation: &Activation,
    activated_at: Instant,
) -> Result<Option<Report>> {
    let deadline = activated_at + activation.confirm;
    let mut last_error = anyhow::anyhow!("the host did not answer");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(last_error);
        }
        match confirm(endpoint, &activation.dir, confirm_options(remaining)).await {
            Ok(Confirm::Done(report)) => return Ok(report),
            Ok(Confirm::WindowClosed) => bail!("the confirmation window had already closed"),
            Err(error) => last_error = error,
        }
        tokio::time::sleep(Duration::from_millis(100).min(remaining)).await;
    }
}

/// What one confirmation attempt achieved.
enum Confirm {
    /// The canary is gone by prov's hand: the host confirms; its result
    /// when it was written in time.
    Done(Option<Report>),
    /// The host had already closed the window (it rolls back).
    WindowClosed,
}

/// Reads what `activate.sh confirm` printed.
fn parse_confirm(out: &str) -> Result<Confirm> {
    let mut lines = out.lines().map(str::trim);
    match lines.next() {
        Some("confirming") => {}
        Some("closed") => return Ok(Confirm::WindowClosed),
        other => bail!("the host's helper answered {other:?} to the confirmation"),
    }
    let mut result = None;
    let mut generation = None;
    for line in lines {
        if let Some(value) = line.strip_prefix("result ") {
            result = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("generation") {
            generation = value.trim().parse().ok();
        }
    }
    Ok(Confirm::Done(
        result.map(|result| Report { result, generation }),
    ))
}

/// Deletes the canary over a new connection, and reads the host's result
/// the moment the host has written it.
async fn confirm(endpoint: &Endpoint, dir: &str, options: Options) -> Result<Confirm> {
    let connection = fresh(endpoint, options).await?;
    let answer = exec(
        &connection,
        &format!(
            "sh {HOME}/activate.sh confirm {} {}",
            shell_quote(dir),
            CONFIRM_RESULT.as_secs()
        ),
        CONFIRM_RESULT + POLL,
    )
    .await;
    connection.close().await;
    let (done, out) = answer?;
    if !done {
        bail!("the confirming command failed on the host");
    }
    parse_confirm(&out)
}

/// Reads the host's final result, waiting for the host to write it: until
/// the host's deadline has passed and then [`RESULT_GRACE`] more.
async fn read_result(
    link: &mut Link<'_>,
    activation: &Activation,
    activated_at: Instant,
) -> Result<String> {
    let give_up = activated_at + activation.confirm + RESULT_GRACE;
    let mut last_error = String::from("no result yet");
    while Instant::now() < give_up {
        let remaining = give_up.saturating_duration_since(Instant::now());
        let command = format!(
            "sh {HOME}/activate.sh result {} {}",
            shell_quote(&activation.dir),
            remaining.as_secs().clamp(1, WAIT_STEP.as_secs())
        );
        match link.run(&command, WAIT_STEP + 2 * POLL).await {
            Ok((_, result)) if !result.trim().is_empty() => return Ok(result.trim().to_owned()),
            Ok(_) => {}
            Err(error) => {
                last_error = format!("{error:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    bail!(
        "cannot tell how the activation ended: the host's result in {} could not be read ({last_error})",
        activation.dir
    )
}

/// The outcome the host's `result` stands for.
async fn outcome(
    link: &mut Link<'_>,
    activation: &Activation,
    result: &str,
    generation: Option<u64>,
    unconfirmed: Option<String>,
) -> Outcome {
    if result == "confirmed" {
        let generation = match generation {
            Some(generation) => Some(generation),
            None => link.read(&activation.dir, "generation").await.parse().ok(),
        };
        return Outcome::Confirmed { generation };
    }
    let previous = Some(link.read(&activation.dir, "previous").await).filter(|p| !p.is_empty());
    let reason = match result {
        "failed-rolled-back" => {
            let status = link.read(&activation.dir, "activated").await;
            let log = link.read(&activation.dir, "log").await;
            format!(
                "switch-to-configuration exited with status {status}; the host's log:\n{}",
                tail(&log, 20)
            )
        }
        "rolled-back" => unconfirmed.unwrap_or_else(|| {
            format!(
                "the host was not confirmed within {}s",
                activation.confirm.as_secs()
            )
        }),
        other => format!("the host reports `{other}`"),
    };
    Outcome::RolledBack { reason, previous }
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
