//! Saved plans: `prov plan --out FILE`, then `prov apply FILE`.

use std::collections::BTreeMap;
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
        Ok(write_atomic(path, &json)?)
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

pub use crate::atomic::write_atomic;

#[cfg(test)]
mod atomic_tests {
    use super::*;

    /// state-hardening 11: the temp file had a predictable name and was
    /// opened without O_EXCL, so a symlink planted under that name sent the
    /// plan (state included) into any file the user may write.
    #[test]
    fn a_planted_symlink_at_the_temp_name_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = dir.path().join("plan.json");
        for name in [
            format!(".plan.json.tmp-{}", std::process::id()),
            ".plan.json.tmp".to_owned(),
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        write_atomic(&target, b"{\"plan\": 1}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"plan\": 1}");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
    }
}
