//! Command-line arguments of the everyday commands around a deployment:
//! `ssh`, `exec`, `build`, `upload-secrets`, `show`, `completions`, `man`
//! (the rest are in `cli.rs`).

use std::path::PathBuf;

use clap::Args;

/// `--on` for commands that work on hosts.
#[derive(Debug, Args, Clone, Default)]
pub struct HostSelection {
    /// Only these hosts: NAME, GLOB (`web*`), ADDRESS (`web[1]`) or @TAG
    /// (`@role`, `@role=web`). Repeat or separate with commas.
    #[arg(long = "on", value_delimiter = ',')]
    pub on: Vec<String>,
}

/// `prov ssh`.
#[derive(Debug, Args)]
pub struct SshArgs {
    /// The host: its address (`web[0]`, `db`) or machine name (`web-0`).
    pub host: String,
    /// A command to run instead of a login shell (after `--`; the words are
    /// joined with spaces and run by the remote shell, as ssh does).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `prov exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Which hosts (default: every host of the spec).
    #[command(flatten)]
    pub select: HostSelection,
    /// How many hosts to run on at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub parallelism: u16,
    /// Print one JSON array: host, exit code, stdout and stderr of each.
    #[arg(long)]
    pub json: bool,
    /// The command (after `--`; joined with spaces and run by each host's
    /// shell).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `prov build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Which hosts (default: every host with a system).
    #[command(flatten)]
    pub select: HostSelection,
    /// Print JSON: one object per system (hosts, store path, closure).
    #[arg(long)]
    pub json: bool,
}

/// `prov upload-secrets`.
#[derive(Debug, Args)]
pub struct UploadSecretsArgs {
    /// Which hosts (default: every host with a secret).
    #[command(flatten)]
    pub select: HostSelection,
    /// How many hosts to work on at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub parallelism: u16,
}

/// `prov show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A plan saved with `prov plan --out FILE` (age-encrypted or not).
    #[arg(value_name = "PLANFILE")]
    pub plan_file: PathBuf,
    /// Print the plan as JSON (see docs/plan-json.md).
    #[arg(long)]
    pub json: bool,
}

/// `prov completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (or elvish, powershell).
    pub shell: clap_complete::Shell,
}

/// `prov man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write prov.1 and one page per command (prov-plan.1, …) into this
    /// directory instead of printing prov(1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
