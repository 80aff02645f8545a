//! Nix on the deployer: build a system, list its closure, measure it, export
//! it as a stream.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use super::pathinfo::PathInfo;
use crate::spec::SystemSource;

/// A built system and its closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// The system's store path (the "toplevel").
    pub system: String,
    /// Every path of the closure, dependencies first.
    pub paths: Vec<String>,
    /// What the local store records about each path (NAR size and hash,
    /// references, …): asked once, when the closure is listed; the copy
    /// sends it with each path.
    pub infos: Arc<BTreeMap<String, PathInfo>>,
}

impl Closure {
    /// Total NAR size of `paths`.
    #[must_use]
    pub fn bytes_of<'a>(&self, paths: impl IntoIterator<Item = &'a String>) -> u64 {
        paths
            .into_iter()
            .filter_map(|p| self.infos.get(p))
            .map(|i| i.nar_size)
            .sum()
    }

    /// Total NAR size of the closure.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.infos.values().map(|i| i.nar_size).sum()
    }

    /// What the store records about `paths`, in their order.
    ///
    /// # Errors
    /// When one of them is not in the closure.
    pub fn infos_of(&self, paths: &[String]) -> Result<Vec<PathInfo>> {
        paths
            .iter()
            .map(|p| {
                self.infos
                    .get(p)
                    .cloned()
                    .with_context(|| format!("{p} is not in the closure of {}", self.system))
            })
            .collect()
    }
}

/// Runs a local command and returns its stdout; a failure carries the
/// command and its stderr (Nix's own messages, with file and line).
pub async fn run(program: &str, args: &[&str]) -> Result<String> {
    tracing::debug!(program, ?args, "running");
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| {
            format!("cannot run `{program}` (is Nix installed? see scripts/setup.sh)")
        })?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}):\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    String::from_utf8(output.stdout).context("Nix printed something that is not UTF-8")
}

/// Builds (or checks) the system described by `source` and returns its
/// store path; `modules` is the store directory of the modules prov
/// generated for the host (`<prov/…>` in a Nix file's configuration).
///
/// # Errors
/// With Nix's own error message when the build or evaluation fails.
pub async fn build(source: &SystemSource, modules: Option<&str>) -> Result<String> {
    let search = modules.map(search_path);
    let out = match source {
        SystemSource::StorePath(path) => run("nix-store", &["--realise", path]).await?,
        SystemSource::Nix { file, attr } => {
            let file = file.to_string_lossy();
            let mut args = vec![file.as_ref(), "--no-out-link"];
            if let Some(attr) = attr {
                args.extend(["-A", attr.as_str()]);
            }
            if let Some(search) = &search {
                args.extend(["-I", search.as_str()]);
            }
            run("nix-build", &args).await?
        }
        SystemSource::Flake(reference) => {
            run(
                "nix",
                &[
                    "--extra-experimental-features",
                    "nix-command flakes",
                    "build",
                    "--no-link",
                    "--print-out-paths",
                    reference,
                ],
            )
            .await?
        }
    };
    let path = out
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("/nix/store/"))
        .with_context(|| format!("the build of {source:?} printed no store path"))?;
    Ok(path.to_owned())
}

/// The derivation that builds `source` (for `build_on = "target"`).
///
/// # Errors
/// With Nix's own message when evaluation fails.
pub async fn instantiate(source: &SystemSource, modules: Option<&str>) -> Result<Option<String>> {
    let search = modules.map(search_path);
    let out = match source {
        SystemSource::StorePath(path) => {
            let deriver = run("nix-store", &["--query", "--deriver", path]).await?;
            let deriver = deriver.trim();
            if deriver == "unknown-deriver" || !Path::new(deriver).exists() {
                return Ok(None);
            }
            deriver.to_owned()
        }
        SystemSource::Nix { file, attr } => {
            let file = file.to_string_lossy();
            let mut args = vec![file.as_ref()];
            if let Some(attr) = attr {
                args.extend(["-A", attr.as_str()]);
            }
            if let Some(search) = &search {
                args.extend(["-I", search.as_str()]);
            }
            run("nix-instantiate", &args).await?
        }
        SystemSource::Flake(reference) => {
            run(
                "nix",
                &[
                    "--extra-experimental-features",
                    "nix-command flakes",
                    "path-info",
                    "--derivation",
                    reference,
                ],
            )
            .await?
        }
    };
    Ok(out
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".drv"))
        .map(str::to_owned))
}

/// The name a configuration imports prov's generated modules under:
/// `imports = [ <prov/kubernetes.nix> ];`.
pub const MODULES_PREFIX: &str = "prov";

/// `-I prov=DIR`: where `<prov/…>` is found.
fn search_path(modules: &str) -> String {
    format!("{MODULES_PREFIX}={modules}")
}

/// Adds `files` (name, content) as one directory to the store and returns
/// its path; the same files give the same path.
///
/// # Errors
/// When the files cannot be written or Nix cannot add them.
pub async fn add_directory(name: &str, files: &[(&str, &str)]) -> Result<String> {
    let scratch = tempfile::tempdir().context("making a scratch directory")?;
    let dir = scratch.path().join(name);
    fs_err::create_dir(&dir)?;
    for (file, content) in files {
        fs_err::write(dir.join(file), content)?;
    }
    let dir = dir.to_string_lossy().into_owned();
    let out = run("nix-store", &["--add", &dir]).await?;
    let path = out.trim();
    if !path.starts_with("/nix/store/") {
        bail!("nix-store --add printed `{path}`, not a store path");
    }
    Ok(path.to_owned())
}

/// The closure of `path`: every requisite, dependencies first, with what
/// the local store records about each (one `nix path-info --recursive`).
///
/// # Errors
/// When Nix cannot query the store.
pub async fn closure(path: &str) -> Result<Closure> {
    let infos = super::pathinfo::closure_of(path).await?;
    let paths = super::pathinfo::dependency_order(&infos)
        .with_context(|| format!("ordering the closure of {path}"))?;
    Ok(Closure {
        system: path.to_owned(),
        paths,
        infos: Arc::new(infos),
    })
}

/// Starts `nix-store --export PATHS` (PATHS in dependency order) and returns
/// the child, whose stdout is the stream `nix-store --import` reads.
///
/// # Errors
/// When nix-store cannot be started.
pub fn export(paths: &[String]) -> Result<tokio::process::Child> {
    Command::new("nix-store")
        .arg("--export")
        .args(paths)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run nix-store --export")
}
