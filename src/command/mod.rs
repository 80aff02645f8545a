//! One module per command. [`run`] builds the async runtime and dispatches.

mod apply;
mod context;
mod graph;
mod hosts;
mod import;
mod output;
mod plan;
mod rollback;
mod secrets;
mod session;
mod state;
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
/// Any failure, with context; `main` prints it and exits 1.
pub fn run(cli: Cli) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> Result<u8> {
    match &cli.command {
        Command::Validate => validate::run(&cli),
        Command::Plan(args) => plan::run(&cli, args).await,
        Command::Apply(args) => apply::run(&cli, args).await,
        Command::Destroy(args) => apply::destroy(&cli, args).await,
        Command::Import(args) => import::run(&cli, args).await,
        Command::Output(args) => output::run(&cli, args).await,
        Command::Graph => graph::run(&cli),
        Command::Rollback(args) => rollback::run(&cli, args).await,
        Command::State(command) => state::run(&cli, command).await,
        Command::Secrets(command) => secrets::run(&cli, command).await,
    }
}
