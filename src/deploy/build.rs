//! Building the hosts' systems on the deployer, each distinct system once:
//! what planning (`plan/deploys.rs`) and `prov build` share.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::nix::{self, Closure};
use crate::spec::{BuildOn, DeploySpec};

/// One system, ready to deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The system's store path.
    pub system: String,
    /// With `build_on = "target"`: the derivation the host builds (the
    /// system is then not built here).
    pub derivation: Option<String>,
    /// What travels to the host: the system's closure, or the derivation's
    /// with `build_on = "target"`.
    pub closure: Closure,
}

/// The key under which hosts with the same system (and the same modules
/// prov generated for them) share one build.
#[must_use]
pub fn key(deploy: &DeploySpec, modules: Option<&str>) -> String {
    format!("{:?}/{:?}/{modules:?}", deploy.system, deploy.build_on)
}

/// Builds each distinct system of `deploys` once (with `build_on =
/// "target"`, instantiates its derivation instead), by [`key`]; each comes
/// with the store directory of the modules prov generated for its host
/// (`<prov/…>`), if any.
///
/// # Errors
/// With Nix's message when a build or an evaluation fails.
pub async fn build_each<'a>(
    deploys: impl IntoIterator<Item = (&'a DeploySpec, Option<&'a str>)>,
) -> Result<BTreeMap<String, Built>> {
    let mut built = BTreeMap::new();
    for (deploy, modules) in deploys {
        let key = key(deploy, modules);
        if built.contains_key(&key) {
            continue;
        }
        built.insert(key, build_one(deploy, modules).await?);
    }
    Ok(built)
}

/// Builds one system (with `build_on = "target"`, instantiates its
/// derivation instead), with prov's generated `modules`.
///
/// # Errors
/// With Nix's message when the build or the evaluation fails.
pub async fn build_one(deploy: &DeploySpec, modules: Option<&str>) -> Result<Built> {
    Ok(match deploy.build_on {
        BuildOn::Local => {
            let system = nix::build(&deploy.system, modules).await?;
            let closure = nix::closure(&system).await?;
            Built {
                system,
                derivation: None,
                closure,
            }
        }
        BuildOn::Target => {
            let derivation = nix::instantiate(&deploy.system, modules)
                .await?
                .context("build_on = \"target\" needs a system with a derivation (nix or flake)")?;
            let outputs = nix::run("nix-store", &["--query", "--outputs", &derivation]).await?;
            let system = outputs.lines().next().unwrap_or_default().trim().to_owned();
            let closure = nix::closure(&derivation).await?;
            Built {
                system,
                derivation: Some(derivation),
                closure,
            }
        }
    })
}
