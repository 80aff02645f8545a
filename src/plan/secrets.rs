//! Phase 4 of planning, the secrets plan: which secrets to upload to or
//! delete from which hosts, from keyed hashes. Decrypts the secrets in
//! memory to hash them; sends nothing anywhere.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use prov_provider::Address;
use prov_state::StateDocument;

use super::clusters::ClusterPlan;
use super::resources::{BuildOptions, ResourceDiff};
use super::{SecretAction, SecretChange};
use crate::deploy::DeployContext;
use crate::secrets::{self, Identities};
use crate::select::Selection;
use crate::spec::{Placement, UploadWhen};

/// Plans secret uploads and deletions for the selected hosts, comparing the
/// keyed hash of each secret (with the state's `key`) with the one state
/// recorded for the host; a secret whose hash matches is uploaded all the
/// same when `presence` says why (missing on the host, or asked for).
///
/// # Errors
/// When a secret cannot be decrypted (the message names it and its
/// recipients).
pub fn plan(
    ctx: &DeployContext,
    doc: &StateDocument,
    resources: &ResourceDiff,
    options: &BuildOptions,
    key: &str,
    presence: &super::secrets_on_hosts::Presence,
    clusters: &[ClusterPlan],
) -> Result<Vec<SecretChange>> {
    if options.destroy {
        return Ok(Vec::new());
    }
    let selection = &options.selection;
    let spec: &crate::spec::Spec = &ctx.spec;
    let selected = |address: &Address| {
        spec.hosts
            .get(address)
            .is_some_and(|info| selection.matches(address, &info.tags))
    };
    let fresh = |address: &Address| resources.is_new(address);
    let identities = Identities::load(&[], Some(ctx.identity()))?;

    let mut wanted: BTreeSet<(Address, String)> = BTreeSet::new();
    let mut changes = Vec::new();
    for (name, secret) in &spec.secrets {
        let targets: Vec<&Address> = secret
            .targets(&spec.hosts)
            .into_iter()
            .filter(|a| selected(a))
            .collect();
        if targets.is_empty() {
            continue;
        }
        let hmac = {
            let plaintext = secrets::decrypt_secret(name, secret, &identities)?;
            secrets::keyed_hash(key, &plaintext, &secret.placement())?
        };
        for address in targets {
            wanted.insert((address.clone(), name.clone()));
            let recorded = doc
                .hosts
                .get(address)
                .and_then(|h| h.secrets.get(name))
                .filter(|_| !fresh(address));
            let (reason, replaces) = match recorded {
                Some(r) if r.hmac == hmac => match presence.reason(address, name) {
                    None => continue,
                    Some(why) => (why.to_owned(), None),
                },
                Some(r) if r.destination != secret.destination => (
                    format!("moved from {}", r.destination),
                    Some(r.destination.clone()),
                ),
                Some(_) => ("changed".to_owned(), None),
                None => ("new".to_owned(), None),
            };
            let mut change = upload(address, name, &secret.placement(), secret.upload, reason);
            change.hmac = Some(hmac.clone());
            change.replaces = replaces;
            changes.push(change);
        }
    }
    for cluster in clusters {
        for (address, files) in &cluster.files {
            if !selected(address) {
                continue;
            }
            for (file, known) in files {
                let name = cluster_file_name(&cluster.cluster.name, &file.path);
                wanted.insert((address.clone(), name.clone()));
                let placement = Placement {
                    destination: file.path.clone(),
                    owner: file.owner.clone(),
                    group: file.group.clone(),
                    mode: file.mode,
                };
                let hmac = match known {
                    true => Some(secrets::keyed_hash(
                        key,
                        file.content.expose().as_bytes(),
                        &placement,
                    )?),
                    false => None,
                };
                let recorded = doc
                    .hosts
                    .get(address)
                    .and_then(|h| h.secrets.get(&name))
                    .filter(|_| !fresh(address));
                let reason = match (recorded, &hmac) {
                    (Some(r), Some(hmac)) if &r.hmac == hmac => {
                        match presence.reason(address, &name) {
                            None => continue,
                            Some(why) => why,
                        }
                    }
                    (Some(_), Some(_)) => "changed",
                    (Some(_), None) => "reissued at apply",
                    (None, Some(_)) => "new",
                    (None, None) => "new, issued at apply",
                };
                let mut change = upload(
                    address,
                    &name,
                    &placement,
                    UploadWhen::Before,
                    reason.to_owned(),
                );
                change.hmac = hmac;
                change.cluster = Some(cluster.cluster.name.clone());
                changes.push(change);
            }
        }
    }
    for (address, record) in &doc.hosts {
        if !selected(address) || fresh(address) {
            continue;
        }
        for (name, recorded) in &record.secrets {
            if wanted.contains(&(address.clone(), name.clone())) {
                continue;
            }
            let reason = if spec.secrets.contains_key(name) {
                "no longer for this host"
            } else if name.starts_with(CLUSTER_FILE_PREFIX) {
                "no longer needed by the host's Kubernetes roles"
            } else {
                "not in the spec"
            };
            changes.push(deletion(address, name, recorded, reason.to_owned()));
        }
    }
    changes.extend(removed_hosts(ctx, doc, selection));
    changes.sort_by(|a, b| (&a.address, &a.name).cmp(&(&b.address, &b.name)));
    // A deletion whose path an upload writes removes only the record.
    let writers: BTreeMap<(Address, String), String> = changes
        .iter()
        .filter(|c| c.action == SecretAction::Upload)
        .map(|c| ((c.address.clone(), c.destination.clone()), c.name.clone()))
        .collect();
    for change in changes
        .iter_mut()
        .filter(|c| c.action == SecretAction::Delete)
    {
        if let Some(writer) = writers.get(&(change.address.clone(), change.destination.clone())) {
            change.reason = format!(
                "{}; the file stays, written by `{writer}` now",
                change.reason
            );
        }
    }
    Ok(changes)
}

/// Deletions of the secrets on hosts that left the spec but stay up: hosts
/// prov reaches over SSH without managing the machine (`target = "ssh"`).
/// A machine prov made is destroyed instead, its secrets with it. Hosts
/// reached before prov recorded where are left alone (it cannot know).
fn removed_hosts(
    ctx: &DeployContext,
    doc: &StateDocument,
    selection: &Selection,
) -> Vec<SecretChange> {
    let no_tags = BTreeMap::new();
    let mut changes = Vec::new();
    for (address, record) in &doc.hosts {
        let gone = !ctx.spec.hosts.contains_key(address) && !doc.resources.contains_key(address);
        if !gone || !selection.matches(address, &no_tags) {
            continue;
        }
        let Some(reach) = &record.reach else {
            if !record.secrets.is_empty() {
                tracing::warn!(
                    "{address} left the spec with secrets on it, but no address is recorded to reach it; remove them by hand"
                );
            }
            continue;
        };
        for (name, recorded) in &record.secrets {
            let reason = format!("the host was removed from the spec; still reachable at {reach}");
            changes.push(deletion(address, name, recorded, reason));
        }
    }
    changes
}

/// What state and plans call a cluster's file: `kubernetes/CLUSTER/FILE`
/// (a `[secrets.NAME]` name never holds a `/`).
#[must_use]
pub fn cluster_file_name(cluster: &str, path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    format!("{CLUSTER_FILE_PREFIX}{cluster}/{file}")
}

/// The start of every cluster file's name.
const CLUSTER_FILE_PREFIX: &str = "kubernetes/";

/// The upload of secret `name` to `address`, landing as `placement`.
fn upload(
    address: &Address,
    name: &str,
    placement: &Placement,
    when: UploadWhen,
    reason: String,
) -> SecretChange {
    SecretChange {
        address: address.clone(),
        name: name.to_owned(),
        action: SecretAction::Upload,
        destination: placement.destination.clone(),
        hmac: None,
        source_sha256: None,
        upload: Some(when),
        reason,
        replaces: None,
        cluster: None,
        owner: Some(placement.owner.clone()),
        group: Some(placement.group.clone()),
        mode: Some(placement.mode_string()),
    }
}

/// The deletion of secret `name`, recorded as `recorded`, from `address`.
fn deletion(
    address: &Address,
    name: &str,
    recorded: &prov_state::SecretRecord,
    reason: String,
) -> SecretChange {
    SecretChange {
        address: address.clone(),
        name: name.to_owned(),
        action: SecretAction::Delete,
        destination: recorded.destination.clone(),
        hmac: None,
        source_sha256: None,
        upload: None,
        reason,
        replaces: None,
        cluster: None,
        owner: None,
        group: None,
        mode: None,
    }
}
