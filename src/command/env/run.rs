//! `prov env run -- CMD…`: up, run the command with the environment's
//! outputs, down. Cancelled (SIGINT, SIGTERM), it marks the environment
//! doomed, starts deleting what it made, and exits within five seconds:
//! a CI runner kills a cancelled job soon after; what is left is `gc`'s.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use prov_provider::Address;
use prov_state::{LockInfo, StateBackend};

use super::location::Base;
use super::{teardown, Teardown};
use crate::cli::Cli;
use crate::cli_env::EnvRunArgs;
use crate::command::apply::Sink;
use crate::interrupt;

/// The exit code when the command ran but the teardown failed (whatever
/// the command's own status): the environment is left for `prov gc`.
pub const EXIT_TEARDOWN_FAILED: u8 = 125;

/// From the signal to the exit, at most this long.
const CANCEL_BUDGET: Duration = Duration::from_millis(4200);

/// Runs `prov env run`.
pub(super) async fn run(cli: &Cli, args: &EnvRunArgs) -> Result<u8> {
    let base = Base::load(cli, &crate::cli_env::StateLocationArgs::default())?;
    if !base.from_file {
        anyhow::bail!(
            "{} does not exist: `prov env run` needs the spec",
            cli.file.display()
        );
    }
    let name = args.name.clone().unwrap_or_else(|| {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("run-{}", &suffix[..8])
    });
    prov_state::environment::check_name(&name).map_err(anyhow::Error::msg)?;
    let up = super::up(cli, &base.spec, &name, args.ttl, args.parallelism).await;
    if interrupt::requested() {
        return cancelled(&base, &name).await;
    }
    if let Err(error) = up {
        eprintln!("prov: environment {name} did not come up: {error:#}");
        if held_elsewhere(&error) {
            // Another run has it: it is not this run's to tear down.
            return Err(error.context(format!("prov env run: bringing {name} up")));
        }
        if args.keep_on_failure {
            eprintln!("prov: --keep-on-failure: environment {name} is left up (`prov env down {name}`, or gc once it expires)");
        } else {
            down_or_report(cli, &base, &name, args.parallelism).await;
        }
        return Err(error.context(format!("prov env run: bringing {name} up")));
    }
    let backend = base.environment_backend(&name)?;
    let outputs = backend
        .read()
        .await?
        .map(|doc| (*doc.outputs).clone())
        .unwrap_or_default();
    let program = args.command.first().context("no command given after --")?;
    println!(
        "\nRunning {} in environment {name}.",
        program.to_string_lossy()
    );
    let mut child = tokio::process::Command::new(program)
        .args(&args.command[1..])
        .envs(crate::command::output::env_vars(&outputs))
        .env("PROV_ENV", &name)
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()));
    let status = match &mut child {
        Ok(child) => tokio::select! {
            status = child.wait() => Some(status.context("waiting for the command")),
            () = interrupt::stopping() => None,
        },
        Err(_) => Some(Err(anyhow::anyhow!("the command did not start"))),
    };
    let Some(status) = status else {
        if let Ok(child) = &child {
            let pid = child.id().and_then(|p| i32::try_from(p).ok());
            if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        return cancelled(&base, &name).await;
    };
    let code = match (&child, status) {
        (Err(error), _) => {
            eprintln!("prov: {error:#}");
            127
        }
        (_, Err(error)) => {
            eprintln!("prov: {error:#}");
            1
        }
        (_, Ok(status)) => status
            .code()
            .map(|c| u8::try_from(c).unwrap_or(1))
            .or_else(|| status.signal().map(|s| u8::try_from(128 + s).unwrap_or(1)))
            .unwrap_or(1),
    };
    if code != 0 && args.keep_on_failure {
        println!(
            "\nThe command exited {code}; --keep-on-failure: environment {name} stays up (`prov env down {name}`, or gc once it expires)."
        );
        return Ok(code);
    }
    println!("\nThe command exited {code}; bringing environment {name} down.");
    if down_or_report(cli, &base, &name, args.parallelism).await {
        Ok(code)
    } else {
        Ok(EXIT_TEARDOWN_FAILED)
    }
}

/// Whether `error` is another run holding the environment's lock.
fn held_elsewhere(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<prov_state::StateError>(),
            Some(
                prov_state::StateError::Locked { .. }
                    | prov_state::StateError::LockedUnknown { .. }
            )
        )
    })
}

/// Tears `name` down; says what failed. Whether it went.
async fn down_or_report(cli: &Cli, base: &Base, name: &str, parallelism: u16) -> bool {
    let result = match base.environment_backend(name) {
        Ok(backend) => {
            teardown(
                cli,
                base,
                name,
                backend,
                parallelism,
                &format!("env run {name} (down)"),
                Sink::Stdout,
            )
            .await
        }
        Err(error) => Err(error),
    };
    match result {
        Ok(Teardown::Gone | Teardown::Absent) => true,
        Err(error) => {
            eprintln!(
                "prov: tearing environment {name} down failed: {error:#}\n\
                 prov: what is left goes with `prov env down {name}`, or `prov gc --yes` once it expires"
            );
            false
        }
    }
}

/// After a signal: doom the environment (expiry now), start deleting what
/// its state records, and give up after [`CANCEL_BUDGET`].
async fn cancelled(base: &Base, name: &str) -> Result<u8> {
    let start = Instant::now();
    let backend = base.environment_backend(name)?;
    match tokio::time::timeout(CANCEL_BUDGET / 3, doom(&backend)).await {
        Ok(Ok(())) => eprintln!("prov: environment {name} is doomed (expires now)"),
        Ok(Err(error)) => eprintln!("prov: could not mark environment {name} doomed: {error:#}"),
        Err(_) => eprintln!("prov: marking environment {name} doomed took too long"),
    }
    let left = CANCEL_BUDGET.saturating_sub(start.elapsed());
    match tokio::time::timeout(left, start_deletes(base, &backend)).await {
        Ok(Ok(n)) => eprintln!("prov: deleted {n} object(s) of environment {name}"),
        Ok(Err(error)) => eprintln!("prov: deleting environment {name}'s objects: {error:#}"),
        Err(_) => eprintln!("prov: deletes of environment {name} still running; leaving them"),
    }
    Err(anyhow::Error::new(interrupt::Interrupted).context(format!(
        "env run cancelled: environment {name} is doomed; `prov gc --yes` destroys what is left of it"
    )))
}

/// Marks the environment doomed with expiry now.
async fn doom(backend: &Arc<dyn StateBackend>) -> Result<()> {
    let lock = backend
        .lock(
            LockInfo::for_this_process("env run (cancelled)"),
            Duration::from_millis(800),
        )
        .await?;
    crate::command::context::held(&**backend, lock, async |lock| {
        let Some(mut doc) = backend.read().await? else {
            return Ok(());
        };
        let Some(mut record) = doc.environment.clone() else {
            return Ok(());
        };
        record.doomed = true;
        record.expires = crate::clock::now()?;
        doc.set_environment(Some(record));
        doc.set_serial(doc.serial + 1);
        lock.write(&doc).await?;
        Ok(())
    })
    .await
}

/// Deletes every object the environment's state records, those nothing
/// depends on first; state is left as it is (gc's refresh sees what went).
async fn start_deletes(base: &Base, backend: &Arc<dyn StateBackend>) -> Result<usize> {
    let Some(doc) = backend.read().await? else {
        return Ok(0);
    };
    let (ctx, _) = base.teardown_context(&doc, Arc::clone(backend))?;
    let providers = Arc::new(ctx.providers(&doc).await?);
    let depended: BTreeSet<&Address> = doc
        .resources
        .values()
        .flat_map(|r| r.dependencies.iter())
        .collect();
    let (first, then): (Vec<_>, Vec<_>) = doc
        .resources
        .iter()
        .filter_map(|(address, r)| {
            Some((address, r.provider.clone(), r.kind.clone(), r.id.clone()?))
        })
        .partition(|(address, ..)| !depended.contains(address));
    let mut deleted = 0;
    for wave in [first, then] {
        let mut deletes = tokio::task::JoinSet::new();
        for (address, provider, kind, id) in wave {
            let providers = Arc::clone(&providers);
            let address = address.clone();
            deletes.spawn(async move {
                let result = match providers.get(&provider) {
                    Ok(p) => p.delete(&kind, &id).await.map_err(anyhow::Error::from),
                    Err(e) => Err(e),
                };
                (address, result)
            });
        }
        while let Some(done) = deletes.join_next().await {
            match done {
                Ok((_, Ok(()))) => deleted += 1,
                Ok((address, Err(error))) => eprintln!("prov: deleting {address}: {error:#}"),
                Err(error) => eprintln!("prov: a delete task failed: {error}"),
            }
        }
    }
    Ok(deleted)
}
