//! Saved plans: `prov plan --out FILE`, then `prov apply FILE`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use prov_provider::{Address, ResourceConfig};
use prov_state::StateDocument;
use serde::{Deserialize, Serialize};

use super::Plan;

/// The marker in the `kind` field of a plan file.
const KIND: &str = "prov-plan";

/// A plan plus the desired configuration of every resource it creates or
/// updates: everything apply needs without reading the spec again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    /// Always `prov-plan`.
    pub kind: String,
    /// The plan.
    pub plan: Plan,
    /// Desired configuration by address, for creates, updates and replacements.
    pub configs: BTreeMap<Address, ResourceConfig>,
    /// The refreshed state the plan was computed against (saved plans only):
    /// apply starts from it, so what refresh saw is what apply acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<StateDocument>,
}

impl PlanFile {
    /// Wraps a plan and its configurations.
    #[must_use]
    pub fn new(plan: Plan, configs: BTreeMap<Address, ResourceConfig>) -> Self {
        Self {
            kind: KIND.to_owned(),
            plan,
            configs,
            prior: None,
        }
    }

    /// Writes the plan to `path` atomically, readable by the owner only (it
    /// holds user data and keys in the clear, like Terraform's plan files).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("encoding the plan")?;
        write_atomic(path, &json)
    }

    /// Reads a plan file.
    ///
    /// # Errors
    /// When the file is unreadable or not a prov plan of this format.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs_err::read(path)?;
        let file: Self = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a prov plan file", path.display()))?;
        if file.kind != KIND {
            bail!("{} is not a prov plan file", path.display());
        }
        if file.plan.format_version != super::PLAN_FORMAT_VERSION {
            bail!(
                "{} has plan format {}, this prov reads format {}",
                path.display(),
                file.plan.format_version,
                super::PLAN_FORMAT_VERSION
            );
        }
        Ok(file)
    }

    /// Refuses a plan made against another state (lineage) or an older version
    /// of this one (serial).
    ///
    /// # Errors
    /// Says which and how to fix it.
    pub fn check_against(&self, state: Option<&StateDocument>) -> Result<()> {
        let plan = &self.plan;
        match (state, &plan.lineage) {
            (None, None) => Ok(()),
            (None, Some(lineage)) => bail!(
                "the saved plan was made against state lineage {lineage}, but there is no state now; run `prov plan` again"
            ),
            (Some(doc), None) if doc.serial > 0 || !doc.resources.is_empty() => bail!(
                "the saved plan is stale: it was made before any state existed, and state is now at serial {}; run `prov plan` again",
                doc.serial
            ),
            (Some(_), None) => Ok(()),
            (Some(doc), Some(lineage)) if &doc.lineage != lineage => bail!(
                "the saved plan's lineage {lineage} does not match the state's lineage {}: it was made for another deployment",
                doc.lineage
            ),
            (Some(doc), Some(_)) if doc.serial != plan.serial => bail!(
                "the saved plan is stale: it was made against state serial {}, and state is now at serial {}; run `prov plan` again",
                plan.serial,
                doc.serial
            ),
            (Some(_), Some(_)) => Ok(()),
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// fsynced and renamed into place, mode 0600.
///
/// # Errors
/// When any step fails (the message names the path).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    fs_err::rename(&tmp, path)?;
    Ok(())
}
