//! Command-line arguments (clap derive). Flags are parsed here and validated
//! where they are used.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Declarative provisioner for NixOS hosts: plan and apply a deployment spec
/// against EC2 (and more), with state kept safely.
#[derive(Debug, Parser)]
#[command(name = "prov", version, about, propagate_version = true)]
pub struct Cli {
    /// The deployment spec.
    #[arg(short = 'f', long = "file", global = true, default_value = "prov.toml")]
    pub file: PathBuf,

    /// Directory of the embedded state (default: `[state] path` of the spec, or
    /// `.prov` next to it).
    #[arg(long, global = true, env = "PROV_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Work on the environment NAME (`prov env up NAME` made it) instead
    /// of the deployment itself: its state, names and tags.
    #[arg(long = "env", global = true, env = "PROV_ENV", value_name = "NAME")]
    pub env: Option<String>,

    /// How long to wait for a state lock held by another run (0: fail at once).
    #[arg(long, global = true, default_value = "0s", value_parser = crate::duration::parse)]
    pub lock_timeout: Duration,

    /// When to color output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Record the SSH host key a host presents when none is pinned yet
    /// (otherwise prov refuses hosts whose key it does not know).
    #[arg(long, global = true)]
    pub accept_new_host_keys: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// When to use color.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the spec without touching anything.
    Validate,
    /// Show what apply would change.
    Plan(PlanArgs),
    /// Make the real objects match the spec (or carry out a saved plan).
    Apply(ApplyArgs),
    /// Destroy every object of the deployment (or the selected ones).
    Destroy(DestroyArgs),
    /// Take an existing object under management: `prov import web[0] i-0abc…`.
    Import(ImportArgs),
    /// Print output values.
    Output(OutputArgs),
    /// Print the dependency graph in Graphviz DOT.
    Graph,
    /// Switch a host back to an earlier generation of its system.
    Rollback(RollbackArgs),
    /// Inspect and repair state.
    #[command(subcommand)]
    State(StateCommand),
    /// Secrets encrypted with age: encrypt, edit, rekey, show, list.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Log in to a host, or run one command there: `prov ssh web-0 -- uptime`.
    Ssh(crate::cli_everyday::SshArgs),
    /// Run a command on every selected host at once: `prov exec --on @role=web -- uptime`.
    Exec(crate::cli_everyday::ExecArgs),
    /// Build the selected hosts' systems and print their store paths
    /// (touches no host and no state).
    Build(crate::cli_everyday::BuildArgs),
    /// Upload the selected hosts' secrets again, and nothing else.
    UploadSecrets(crate::cli_everyday::UploadSecretsArgs),
    /// Render a saved plan (`prov plan --out FILE`) without touching state.
    Show(crate::cli_everyday::ShowArgs),
    /// Print a shell completion script: `source <(prov completions bash)`.
    Completions(CompletionsArgs),
    /// Print the manual page (`prov man | man -l -`), or write one page per
    /// command with `--dir`.
    Man(ManArgs),
    /// Write a Kubernetes cluster's admin kubeconfig (certificates
    /// embedded, 0600).
    Kubeconfig(KubeconfigArgs),
    /// Kubernetes clusters: `prov k8s certs CLUSTER`.
    #[command(subcommand)]
    K8s(K8sCommand),
    /// Ephemeral environments: independent copies of the deployment with
    /// a time to live (`up`, `down`, `ls`, `extend`, `run`, `name`).
    #[command(subcommand)]
    Env(crate::cli_env::EnvCommand),
    /// Destroy environments past their expiry (plus `[environments]
    /// gc_grace`) and doomed ones; a dry run unless --yes.
    Gc(crate::cli_env::GcArgs),
}

/// `prov kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The cluster (`[kubernetes.NAME]`).
    pub cluster: String,
    /// Write it to this file (mode 0600) instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `prov k8s …`.
#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Each certificate of a cluster: subject, SANs, issuer, expiry, host.
    Certs {
        /// The cluster (`[kubernetes.NAME]`).
        cluster: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

pub use crate::cli_everyday::{CompletionsArgs, ManArgs};

/// `prov secrets …`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Encrypt plaintext from stdin into the secret's `file`, to its recipients.
    Encrypt {
        /// The secret (`[secrets.NAME]`).
        name: String,
    },
    /// Edit a secret with $EDITOR (a temp file in a private directory, on
    /// tmpfs when there is one, overwritten and removed afterwards).
    Edit {
        /// The secret.
        name: String,
        /// An age identity file or SSH private key to decrypt with (repeatable;
        /// default: PROV_AGE_IDENTITY, else the deployer's and ~/.ssh keys).
        #[arg(long, short = 'i', value_name = "FILE")]
        identity: Vec<PathBuf>,
    },
    /// Re-encrypt every secret to its current recipients and say what changed.
    Rekey {
        /// As for `edit`.
        #[arg(long, short = 'i', value_name = "FILE")]
        identity: Vec<PathBuf>,
    },
    /// Print a secret's plaintext (only with --reveal).
    Show {
        /// The secret.
        name: String,
        /// Really print the plaintext to stdout.
        #[arg(long)]
        reveal: bool,
        /// As for `edit`.
        #[arg(long, short = 'i', value_name = "FILE")]
        identity: Vec<PathBuf>,
    },
    /// List secrets: names, files, recipients and hosts (never values).
    List,
}

/// Options shared by plan, apply and destroy.
#[derive(Debug, Args, Clone, Default)]
pub struct SelectArgs {
    /// Only these resources: NAME, GLOB (`web*`), ADDRESS (`web[1]`,
    /// `key_pair.deploy`) or @TAG (`@role`, `@role=web`). Repeat or separate with
    /// commas.
    #[arg(long = "on", value_delimiter = ',')]
    pub on: Vec<String>,

    /// Read the real objects before planning (`--refresh=false` plans from state
    /// alone).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub refresh: bool,

    /// Replace this resource even though nothing forces it (`web[1]`,
    /// `key_pair.deploy`); repeatable. As Terraform's `-replace`.
    #[arg(long = "replace", value_name = "ADDRESS")]
    pub replace: Vec<String>,
}

/// `prov plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Selection and refresh.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print the plan as JSON (see docs/plan-json.md).
    #[arg(long)]
    pub json: bool,
    /// Save the plan to FILE for `prov apply FILE`.
    #[arg(long = "out", visible_alias = "o")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan destroying everything instead.
    #[arg(long)]
    pub destroy: bool,
}

/// `prov apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `prov plan --out FILE`.
    pub plan_file: Option<PathBuf>,
    /// What every command that changes things takes.
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// `prov destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// What every command that changes things takes.
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// The options of `apply` and `destroy`.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Selection and refresh.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Do not ask for confirmation (required when not on a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// How many resources to work on at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub parallelism: u16,
}

/// `prov import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The address in the spec (`web[0]`, `key_pair.deploy`).
    pub address: String,
    /// The provider's id of the existing object.
    pub id: String,
}

/// `prov rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The host's address (`web[0]`, `db`).
    pub host: String,
    /// The generation to switch to (default: the one before the current).
    #[arg(long)]
    pub generation: Option<u64>,
}

/// `prov output`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// One output only.
    pub name: Option<String>,
    /// Print JSON (the same as `--format json`).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// `text` (NAME = VALUE), `json`, `env` (`PROV_OUTPUT_NAME='value'`
    /// lines for `eval`), or `github` (appended to `$GITHUB_OUTPUT`).
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}

/// How `prov output` writes the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// `NAME = VALUE` lines (one value: the value alone).
    Text,
    /// A JSON object (one value: that value).
    Json,
    /// `PROV_OUTPUT_NAME='VALUE'` lines, shell-quoted, for `eval`.
    Env,
    /// `NAME=VALUE` entries appended to the file `$GITHUB_OUTPUT` names.
    Github,
}

/// `prov state …`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List resource addresses in state.
    List {
        /// Print JSON: one object per resource (address, provider, kind,
        /// id, status).
        #[arg(long)]
        json: bool,
    },
    /// Show one resource, or the whole document at a serial.
    Show {
        /// The resource address (omit with --serial to show the whole document).
        address: Option<String>,
        /// Show the version with this serial instead of the latest.
        #[arg(long)]
        serial: Option<u64>,
    },
    /// Forget resources (the real objects are left alone).
    Rm {
        /// Addresses to remove.
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Print the state document as JSON.
    Pull {
        /// The version with this serial instead of the latest.
        #[arg(long)]
        serial: Option<u64>,
    },
    /// Replace the state with a JSON document (lineage and serial checked).
    Push {
        /// The document (`-` for stdin).
        #[arg(value_name = "FILE")]
        document: PathBuf,
        /// Skip the lineage and serial checks.
        #[arg(long)]
        force: bool,
    },
    /// List every stored version; with `--prune`, first remove all but the
    /// newest (`--keep N`, or `[state] keep_versions`).
    History {
        /// Remove older versions first.
        #[arg(long)]
        prune: bool,
        /// How many of the newest versions `--prune` keeps (default:
        /// `[state] keep_versions`).
        #[arg(long, value_name = "N", requires = "prune", value_parser = clap::value_parser!(u64).range(1..))]
        keep: Option<u64>,
        /// Print JSON: one object per version.
        #[arg(long)]
        json: bool,
    },
    /// Move a resource and its host record to another address, keeping the
    /// real object: `prov state mv web app` (every index) or
    /// `prov state mv web web[0]`.
    Mv {
        /// The address in state now.
        from: String,
        /// The new address (must not be in state).
        to: String,
    },
    /// Remove a lock left by a run that is gone.
    ForceUnlock {
        /// The lock id printed in the lock message.
        id: String,
    },
    /// Rebuild a damaged embedded database from the copy of its latest
    /// version kept beside it (`latest.json`); the damaged database is kept.
    Recover,
    /// Encrypt plaintext state in place to `[state] encrypt_to` (writes the
    /// latest version again, encrypted, as a new serial).
    Encrypt,
    /// Copy the state (every version, same lineage and serials) to another
    /// backend; then point `[state]` in the spec at it.
    Migrate {
        /// Where to: `s3://BUCKET/KEY`, `embedded:PATH` or a directory path.
        #[arg(long)]
        to: String,
    },
}
