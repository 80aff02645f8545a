//! One module per command. [`run`] builds the async runtime and dispatches.

pub(crate) mod apply;
mod build;
mod completions;
mod context;
mod env;
mod graph;
mod hosts;
mod import;
mod kubernetes;
pub(crate) mod output;
mod plan;
mod remote;
mod rollback;
mod s3_backend;
mod secrets;
mod show;
mod state;
mod upload_secrets;
mod validate;

use anyhow::{Context as _, Result};

use crate::cli::{Cli, Command};
pub use context::Context;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code with `--detailed-exitcode`: the plan has changes.
pub const EXIT_CHANGES: u8 = 2;

/// Runs the command line; returns the exit code.
///
/// # Errors
/// Any failure, with context; `main` prints it and exits 1, or 130 when the
/// chain holds [`crate::interrupt::Interrupted`].
pub fn run(cli: Cli) -> Result<u8> {
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        crate::interrupt::install().context("installing the Ctrl-C handler")?;
        let cutoff = cutoff(&cli.command);
        tokio::select! {
            result = dispatch(&cli) => result,
            () = cutoff => {
                // The command was dropped where it stood; sessions it held
                // finish their last write and release their locks.
                crate::session::settle(std::time::Duration::from_secs(3)).await;
                Err(anyhow::Error::new(crate::interrupt::Interrupted))
            }
        }
    });
    // Blocking work left behind (a read of stdin) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    // What is dropped from here to the exit logs nothing (see ui::logging).
    crate::ui::logging::thread_ending();
    result
}

/// The async runtime every command runs on; each of its threads stops
/// logging before it exits (see [`crate::ui::logging`]).
///
/// # Errors
/// When the runtime cannot be started.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_stop(crate::ui::logging::thread_ending)
        .build()
        .context("starting the async runtime")
}

/// When a command still running after a signal is dropped. Commands that
/// change state stop by themselves (they save and release the lock); they
/// are dropped only if that takes past the grace period plus three seconds.
/// The rest hold nothing worth finishing and are dropped at once.
async fn cutoff(command: &Command) {
    use crate::interrupt;
    let cooperates = matches!(
        command,
        Command::Plan(_)
            | Command::Apply(_)
            | Command::Destroy(_)
            | Command::Import(_)
            | Command::Rollback(_)
            | Command::State(_)
            | Command::UploadSecrets(_)
            | Command::Env(
                crate::cli_env::EnvCommand::Up(_)
                    | crate::cli_env::EnvCommand::Down(_)
                    | crate::cli_env::EnvCommand::Extend(_)
                    | crate::cli_env::EnvCommand::Run(_)
            )
            | Command::Gc(_)
    );
    if cooperates {
        interrupt::abandoning().await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    } else {
        interrupt::stopping().await;
    }
}

async fn dispatch(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Validate => validate::run(cli),
        Command::Plan(args) => plan::run(cli, args).await,
        Command::Apply(args) => apply::run(cli, args).await,
        Command::Destroy(args) => apply::destroy(cli, args).await,
        Command::Import(args) => import::run(cli, args).await,
        Command::Output(args) => output::run(cli, args).await,
        Command::Graph => graph::run(cli),
        Command::Rollback(args) => rollback::run(cli, args).await,
        Command::State(command) => state::run(cli, command).await,
        Command::Secrets(command) => secrets::run(cli, command).await,
        Command::Kubeconfig(args) => kubernetes::kubeconfig(cli, args).await,
        Command::K8s(command) => kubernetes::run(cli, command).await,
        Command::Ssh(args) => remote::ssh(cli, args).await,
        Command::Exec(args) => remote::exec(cli, args).await,
        Command::Build(args) => build::run(cli, args).await,
        Command::UploadSecrets(args) => upload_secrets::run(cli, args).await,
        Command::Show(args) => show::run(cli, args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
        Command::Env(command) => env::run(cli, command).await,
        Command::Gc(args) => env::gc(cli, args).await,
    }
}
