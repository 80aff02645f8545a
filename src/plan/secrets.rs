//! Phase 4 of planning, the secrets plan: which secrets to upload to or
//! delete from which hosts, from keyed hashes. Decrypts the secrets in
//! memory to hash them; sends nothing anywhere.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use prov_provider::Address;
use prov_state::StateDocument;

use super::resources::{BuildOptions, ResourceDiff};
use super::{SecretAction, SecretChange};
use crate::deploy::DeployContext;
use crate::secrets::{self, Identities};
use crate::select::Selection;

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
) -> Result<Vec<SecretChange>> {
    if options.destroy {
        return Ok(Vec::new());
    }
    let selection = &options.selection;
    let spec = &ctx.spec;
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
            secrets::keyed_hash(key, &plaintext, secret)?
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
            changes.push(SecretChange {
                address: address.clone(),
                name: name.clone(),
                action: SecretAction::Upload,
                destination: secret.destination.clone(),
                hmac: Some(hmac.clone()),
                source_sha256: None,
                upload: Some(secret.upload),
                reason,
                replaces,
            });
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
    }
}
