//! Phase 3 of planning, the system deploy plan: which hosts get a new NixOS
//! system, and how much must travel. Builds the systems and asks the hosts;
//! changes neither.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use prov_provider::{Address, AttributeChange};
use prov_state::StateDocument;
use serde_json::Value;

use super::resources::{BuildOptions, ResourceDiff};
use super::{DeployChange, Drift, DriftKind};
use crate::deploy::{build, copy, DeployContext};
use crate::spec::{DeploySpec, HostInfo};

/// What phase 3 found.
#[derive(Debug, Clone, Default)]
pub struct Systems {
    /// One entry per host that gets a new system, by address.
    pub deploys: Vec<DeployChange>,
    /// Hosts whose system profile was changed outside prov.
    pub drift: Vec<Drift>,
}

/// Plans the deploy of every selected host that has a system: builds the
/// systems (once per distinct system), asks reachable hosts (`refresh`) what
/// they run and what they lack.
///
/// # Errors
/// When a build fails, or a host that should exist cannot be asked.
pub async fn plan(
    ctx: &DeployContext,
    doc: &StateDocument,
    resources: &ResourceDiff,
    options: &BuildOptions,
    refresh: bool,
) -> Result<Systems> {
    let mut systems = Systems::default();
    let hosts: Vec<(&Address, &HostInfo, &DeploySpec)> = ctx
        .spec
        .hosts
        .iter()
        .filter(|(address, info)| options.selection.matches(address, &info.tags))
        .filter_map(|(address, info)| info.deploy.as_ref().map(|d| (address, &**info, d)))
        .collect();
    if hosts.is_empty() || options.destroy {
        return Ok(systems);
    }

    // A host this apply creates (or whose machine state does not know yet)
    // cannot be asked.
    let is_new = |address: &Address, info: &HostInfo| {
        resources.is_new(address)
            || (info.target.has_provider() && !doc.resources.contains_key(address))
    };
    // Connect to every host that is asked and start its Nix while the
    // systems build: the handshakes and Nix's start overlap the build
    // instead of following it.
    let mut asked = BTreeMap::new();
    for (address, info, _) in &hosts {
        if refresh && !is_new(address, info) {
            let endpoint = ctx.endpoint(info, address, doc)?;
            let pool = ctx.pool.clone();
            let connecting = tokio::spawn(async move {
                let connection = pool.get(&endpoint).await?;
                anyhow::Ok(copy::greet(&connection).await)
            });
            asked.insert(*address, AbortOnDrop(connecting));
        }
    }

    // The modules prov generates for each host (its Kubernetes role), as
    // state knows the cluster now.
    let mut modules: BTreeMap<&Address, Option<String>> = BTreeMap::new();
    for (address, _, _) in &hosts {
        let generated =
            crate::deploy::clusters::modules(&ctx.spec, doc, address, Some(resources)).await?;
        modules.insert(address, generated);
    }
    // Build each distinct system once.
    let built =
        build::build_each(hosts.iter().map(|(address, _, deploy)| {
            (*deploy, modules.get(address).and_then(|m| m.as_deref()))
        }))
        .await?;

    let mut tasks = tokio::task::JoinSet::new();
    for (address, info, deploy) in hosts {
        let generated = modules.get(address).and_then(|m| m.as_deref());
        let Some(build::Built {
            system,
            derivation,
            closure,
        }) = built.get(&build::key(deploy, generated)).cloned()
        else {
            continue;
        };
        let new_host = is_new(address, info);
        // A machine about to be changed in place may be down now (stopped
        // outside prov, to be started by this apply): asking it what it
        // runs is then best effort.
        let updating = resources.is_updated(address);
        let connecting = asked.remove(address);
        let recorded = doc.hosts.get(address).cloned().unwrap_or_default();
        let address = address.clone();
        let goal = deploy.goal;
        tasks.spawn(async move {
            let (current, missing, open) = match connecting {
                Some(mut connecting) => {
                    let connected = (&mut connecting.0)
                        .await
                        .context("connecting to a host panicked")?;
                    let greeted = match connected {
                        Ok(greeted) => greeted,
                        Err(error) if updating => {
                            tracing::info!(%address, error = %format!("{error:#}"), "host not reachable before its update; planning from state");
                            return anyhow::Ok((
                                address,
                                goal,
                                system,
                                derivation,
                                closure,
                                recorded.system.clone(),
                                None,
                                recorded,
                                new_host,
                                None,
                            ));
                        }
                        Err(error) => return Err(error),
                    };
                    let (survey, open) = copy::survey(greeted?, &closure).await?;
                    let current = if goal.sets_profile() {
                        survey.current
                    } else {
                        recorded.system.clone()
                    };
                    (current, Some(survey.missing), Some(open))
                }
                None => (recorded.system.clone(), None, None),
            };
            anyhow::Ok((
                address, goal, system, derivation, closure, current, missing, recorded, new_host,
                open,
            ))
        });
    }

    while let Some(joined) = tasks.join_next().await {
        let (
            address,
            goal,
            system,
            derivation,
            closure,
            current,
            missing,
            recorded,
            new_host,
            open,
        ) = joined
            .context("a deploy planning task panicked")?
            .with_context(|| "asking a host what it runs".to_owned())?;
        let mut reason = new_host.then(|| "new host".to_owned());
        if let (Some(recorded_system), Some(current)) = (&recorded.system, &current) {
            if goal.sets_profile() && missing.is_some() && recorded_system != current {
                systems.drift.push(Drift {
                    address: address.clone(),
                    kind: DriftKind::Changed,
                    attributes: vec![AttributeChange {
                        name: "system".into(),
                        before: Some(Value::from(recorded_system.clone())),
                        after: Some(Value::from(current.clone())),
                        after_unknown: false,
                        forces_replacement: false,
                    }],
                });
                reason = Some("the system profile was changed on the host outside prov".to_owned());
            }
        }
        let same_goal = recorded.goal == Some(goal);
        let up_to_date = current.as_deref() == Some(system.as_str())
            && (goal.sets_profile()
                || (same_goal && recorded.system.as_deref() == Some(system.as_str())))
            && !new_host;
        // The host's serve session stays open only for a copy to come.
        let open = match open {
            Some(open) if !up_to_date && missing.as_ref().is_some_and(|m| !m.is_empty()) => {
                Some(open)
            }
            Some(open) => {
                open.session.close().await;
                None
            }
            None => None,
        };
        if up_to_date {
            continue;
        }
        let exact = missing.is_some();
        let mut open = open;
        let known = missing.clone().map(|missing| {
            std::sync::Arc::new(crate::plan::model::Known {
                closure: closure.clone(),
                missing,
                session: open.take().map(copy::Kept::new).unwrap_or_default(),
            })
        });
        let to_copy = missing.unwrap_or_else(|| closure.paths.clone());
        systems.deploys.push(DeployChange {
            goal,
            current,
            desired: system,
            paths: to_copy.len(),
            bytes: closure.bytes_of(&to_copy),
            exact,
            derivation,
            reason,
            modules: modules.get(&address).cloned().flatten(),
            via_cache: ctx
                .spec
                .cache
                .as_ref()
                .map(crate::spec::cache::CacheSettings::url),
            known,
            address,
        });
    }
    systems.deploys.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(systems)
}

/// A spawned task that stops when its handle goes (a failed build ends the
/// connecting too).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
