//! Arguments of `prov env …` and `prov gc`.

use std::time::Duration;

use clap::{Args, Subcommand};

/// `prov env …`.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Apply the spec as the environment NAME (its own state, names and
    /// tags), without asking; again on an existing one converges it.
    Up(EnvUpArgs),
    /// Destroy everything the environment NAME made, from its state alone
    /// (no spec needed), then remove its state.
    Down(EnvDownArgs),
    /// List the environments: name, owner, created, expires, status,
    /// resources.
    Ls(EnvLsArgs),
    /// Give an environment a new expiry: now plus --ttl.
    Extend(EnvExtendArgs),
    /// Bring an environment up, run a command with its outputs in the
    /// environment (`PROV_OUTPUT_*`), and bring it down; exits with the
    /// command's status.
    Run(EnvRunArgs),
    /// Print the environment name for a branch or tag:
    /// `prov env name --from-ref "$GITHUB_REF"`.
    Name(EnvNameArgs),
}

/// Where an environment's state is when there is no spec to say
/// (`prov env down`, `ls`, `extend`, `gc`).
#[derive(Debug, Args, Clone, Default)]
pub struct StateLocationArgs {
    /// The deployment's state when the spec is gone: `s3://BUCKET/KEY`
    /// (region and endpoint from the AWS environment), `embedded:PATH` or a
    /// directory. Default: the spec's `[state]`, else `.prov`.
    #[arg(long, value_name = "LOCATION")]
    pub state: Option<String>,
}

/// `prov env up`.
#[derive(Debug, Args)]
pub struct EnvUpArgs {
    /// The environment (`pr-42`; `prov env name --from-ref REF` makes one).
    pub name: String,
    /// How long it lives (default `[environments] default_ttl`): `2h`, `1d`.
    #[arg(long, value_parser = crate::duration::parse)]
    pub ttl: Option<Duration>,
    /// How many resources to work on at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub parallelism: u16,
}

/// `prov env down`.
#[derive(Debug, Args)]
pub struct EnvDownArgs {
    /// The environment.
    pub name: String,
    /// Where its state is, when there is no spec.
    #[command(flatten)]
    pub location: StateLocationArgs,
    /// How many resources to work on at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub parallelism: u16,
}

/// `prov env ls`.
#[derive(Debug, Args)]
pub struct EnvLsArgs {
    /// As JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the state is, when there is no spec.
    #[command(flatten)]
    pub location: StateLocationArgs,
}

/// `prov env extend`.
#[derive(Debug, Args)]
pub struct EnvExtendArgs {
    /// The environment.
    pub name: String,
    /// Its new time to live, from now.
    #[arg(long, value_parser = crate::duration::parse)]
    pub ttl: Duration,
    /// Where its state is, when there is no spec.
    #[command(flatten)]
    pub location: StateLocationArgs,
}

/// `prov env run`.
#[derive(Debug, Args)]
pub struct EnvRunArgs {
    /// The environment (default: `run-` and a random suffix).
    #[arg(long)]
    pub name: Option<String>,
    /// How long it may live if teardown never happens (default
    /// `[environments] default_ttl`).
    #[arg(long, value_parser = crate::duration::parse)]
    pub ttl: Option<Duration>,
    /// Leave the environment up when the command fails (for a look; gc
    /// collects it when it expires).
    #[arg(long)]
    pub keep_on_failure: bool,
    /// How many resources to work on at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub parallelism: u16,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// `prov env name`.
#[derive(Debug, Args)]
pub struct EnvNameArgs {
    /// A branch or tag (`refs/heads/feature/x`, `feature/x`).
    #[arg(long)]
    pub from_ref: String,
}

/// `prov gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Really destroy (without it, only say what would go).
    #[arg(long)]
    pub yes: bool,
    /// Also look for objects tagged with this deployment whose environment
    /// (or incarnation) no longer exists in state.
    #[arg(long)]
    pub orphans: bool,
    /// An orphan without an expiry tag is deleted only once it is older
    /// than this.
    #[arg(long, default_value = "1h", value_parser = crate::duration::parse)]
    pub min_age: Duration,
    /// Destroy at most this many environments and orphans in one run.
    #[arg(long)]
    pub max_deletions: Option<usize>,
    /// As JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the state is, when there is no spec.
    #[command(flatten)]
    pub location: StateLocationArgs,
    /// How many resources to work on at once, per environment.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub parallelism: u16,
}
