//! Secrets on hosts: carrying out the planned uploads and deletions over the
//! host's SSH connection (planning them is `crate::plan::secrets`). Plaintext
//! exists only in memory on the deployer and in the destination file on the
//! host.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use prov_provider::Address;
use prov_state::SecretRecord;
use tokio::sync::Mutex;

use super::clusters::ClusterFiles;
use super::{DeployContext, Progress};
use crate::plan::{SecretAction, SecretChange};
use crate::secrets::{self, Identities, Plaintext};
use crate::session::StateSession;
use crate::spec::{Placement, SecretSpec, Spec, UploadWhen};
use crate::ssh::{shell_quote, Connection};

/// The plaintext of every secret the changes upload, decrypted once and
/// checked against the keyed hashes the plan recorded: a `[secrets.NAME]`
/// by its name (it is the same on every host), a cluster's file by host and
/// name (each host has its own).
#[derive(Default)]
pub struct Values {
    values: BTreeMap<ValueKey, Value>,
}

/// Which value: `(None, NAME)` for a spec secret, `(Some(HOST), NAME)` for a
/// cluster's file.
type ValueKey = (Option<Address>, String);

/// One value to upload.
struct Value {
    plaintext: Plaintext,
    /// How it lands on the host.
    placement: Placement,
    /// Its keyed hash (with the state's key), recorded in state once it is
    /// uploaded.
    hmac: String,
}

/// The value key of `change`.
fn value_key(change: &SecretChange) -> ValueKey {
    let host = change.cluster.as_ref().map(|_| change.address.clone());
    (host, change.name.clone())
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Values")
            .field("secrets", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// SHA-256 (hex) of a secret's encrypted file: what a saved plan keeps
/// instead of a keyed hash of the value.
///
/// # Errors
/// When the file cannot be read.
pub fn source_digest(secret: &SecretSpec) -> Result<String> {
    use sha2::Digest as _;
    let bytes = fs_err::read(&secret.file)?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Records in each upload of a plan about to be saved the digest of the
/// secret's encrypted file.
///
/// # Errors
/// When a secret's file cannot be read.
pub fn record_sources(spec: &Spec, changes: &mut [SecretChange]) -> Result<()> {
    for change in changes
        .iter_mut()
        .filter(|c| c.action == SecretAction::Upload)
    {
        if let Some(secret) = spec.secrets.get(&change.name) {
            change.source_sha256 = Some(source_digest(secret)?);
        }
    }
    Ok(())
}

/// Decrypts what `changes` upload, before anything is sent anywhere.
///
/// # Errors
/// When a secret cannot be decrypted, or differs from what was planned.
pub async fn decrypt(
    ctx: &DeployContext,
    changes: &[SecretChange],
    session: &Arc<Mutex<StateSession>>,
    cluster_files: &ClusterFiles,
) -> Result<Values> {
    let key = session.lock().await.doc.secret_hmac_key.clone();
    let mut values = Values::default();
    if changes.is_empty() {
        return Ok(values);
    }
    let identities = Identities::load(&[], Some(ctx.identity()))?;
    let key = || {
        key.as_deref()
            .context("the state has no secret_hmac_key; plan again")
    };
    for change in changes.iter().filter(|c| c.action == SecretAction::Upload) {
        let value_key = value_key(change);
        if values.values.contains_key(&value_key) {
            continue;
        }
        let changed = || {
            anyhow!(
                "secret `{}` changed since the plan was made; plan again",
                change.name
            )
        };
        let value = if change.cluster.is_some() {
            // Made by prov (issued at apply when the plan holds no hash).
            let file = cluster_files
                .get(&(change.address.clone(), change.name.clone()))
                .with_context(|| {
                    format!(
                        "{} needs no `{}` any more; plan again",
                        change.address, change.name
                    )
                })?;
            let placement = Placement {
                destination: file.path.clone(),
                owner: file.owner.clone(),
                group: file.group.clone(),
                mode: file.mode,
            };
            let plaintext = Plaintext::new(file.content.expose().as_bytes().to_vec());
            let hmac = secrets::keyed_hash(key()?, &plaintext, &placement)?;
            if change.hmac.as_deref().is_some_and(|h| h != hmac) {
                return Err(changed());
            }
            Value {
                plaintext,
                placement,
                hmac,
            }
        } else {
            let secret = ctx.spec.secrets.get(&change.name).with_context(|| {
                format!(
                    "secret `{}` is no longer in the spec; plan again",
                    change.name
                )
            })?;
            // A saved plan holds no HMAC: the encrypted file must be the one
            // the plan was made from.
            let unchanged = match (&change.hmac, &change.source_sha256) {
                (Some(_), _) => true,
                (None, Some(planned)) => source_digest(secret)? == *planned,
                (None, None) => false,
            };
            let plaintext = secrets::decrypt_secret(&change.name, secret, &identities)?;
            let placement = secret.placement();
            let hmac = secrets::keyed_hash(key()?, &plaintext, &placement)?;
            let planned = change.hmac.as_deref().is_none_or(|h| h == hmac);
            if !(unchanged && planned) {
                return Err(changed());
            }
            Value {
                plaintext,
                placement,
                hmac,
            }
        };
        values.values.insert(value_key, value);
    }
    Ok(values)
}

/// Which changes to carry out at one point of a host's deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before activation: deletions and `upload = "before"` secrets.
    Before,
    /// After confirmation: `upload = "after"` secrets.
    After,
    /// Everything (a host whose system does not change).
    All,
}

/// The run's secret changes and their plaintext.
#[derive(Debug, Clone, Copy)]
pub struct HostSecrets<'a> {
    /// Every planned secret change of the run.
    pub changes: &'a [SecretChange],
    /// The decrypted values.
    pub values: &'a Values,
}

/// Carries out the secret changes of `address` that belong to `stage`,
/// recording each in state as it is done; returns how many were done.
///
/// # Errors
/// When writing or removing a file on the host fails.
pub async fn sync_host(
    connection: &Connection,
    address: &Address,
    secrets: &HostSecrets<'_>,
    stage: Stage,
    session: &Arc<Mutex<StateSession>>,
    progress: &Progress,
) -> Result<usize> {
    let mut done = 0;
    let HostSecrets { changes, values } = *secrets;
    let host_changes: Vec<&SecretChange> =
        changes.iter().filter(|c| &c.address == address).collect();
    // A path some upload of this run writes is never removed, whatever the
    // order: a secret renamed (or swapped) but kept at its path stays.
    let written: BTreeSet<&str> = host_changes
        .iter()
        .filter(|c| c.action == SecretAction::Upload)
        .map(|c| c.destination.as_str())
        .collect();
    // Before activation, an upload whose owner or group the new system
    // creates (a service's user) waits until after it.
    let absent = match stage {
        Stage::Before => absent_accounts(connection, &host_changes, values).await?,
        Stage::After | Stage::All => BTreeSet::new(),
    };
    for change in host_changes {
        let after = change.upload == Some(UploadWhen::After);
        let value = values.values.get(&value_key(change));
        let waits = value.is_some_and(|v| {
            absent.contains(&v.placement.owner) || absent.contains(&v.placement.group)
        });
        // After activation: the `after` uploads, and what waited for its
        // owner (not recorded with this value yet).
        let recorded = match (stage, value) {
            (Stage::After, Some(value)) => {
                let s = session.lock().await;
                s.doc
                    .hosts
                    .get(&change.address)
                    .and_then(|h| h.secrets.get(&change.name))
                    .is_some_and(|r| r.hmac == value.hmac)
            }
            _ => false,
        };
        let now = match stage {
            Stage::All => true,
            Stage::Before => change.action == SecretAction::Delete || !(after || waits),
            Stage::After => change.action == SecretAction::Upload && (after || !recorded),
        };
        if !now {
            if waits && stage == Stage::Before {
                progress.phase(
                    address,
                    &format!(
                        "secret {} waits for its owner (made by the activation)",
                        change.name
                    ),
                );
            }
            continue;
        }
        match change.action {
            SecretAction::Upload => {
                let value =
                    value.with_context(|| format!("secret `{}` was not decrypted", change.name))?;
                let placement = &value.placement;
                upload(connection, placement, &value.plaintext)
                    .await
                    .with_context(|| format!("uploading secret `{}` to {address}", change.name))?;
                if let Some(old) = change
                    .replaces
                    .as_deref()
                    .filter(|old| !written.contains(old))
                {
                    remove(connection, old).await.with_context(|| {
                        format!(
                            "removing the old file of secret `{}` from {address}",
                            change.name
                        )
                    })?;
                }
                let record = SecretRecord {
                    hmac: value.hmac.clone(),
                    destination: placement.destination.clone(),
                };
                let mut s = session.lock().await;
                s.doc.record_secret(address, &change.name, record);
                s.save().await?;
                drop(s);
                progress.phase(
                    address,
                    &format!(
                        "uploaded secret {} to {}",
                        change.name, placement.destination
                    ),
                );
            }
            SecretAction::Delete => {
                if !written.contains(change.destination.as_str()) {
                    remove(connection, &change.destination)
                        .await
                        .with_context(|| {
                            format!("deleting secret `{}` from {address}", change.name)
                        })?;
                }
                let mut s = session.lock().await;
                s.doc.forget_secret(address, &change.name);
                s.save().await?;
                drop(s);
                progress.phase(
                    address,
                    &format!("deleted secret {} from {}", change.name, change.destination),
                );
            }
        }
        done += 1;
    }
    Ok(done)
}

/// Writes `plaintext` to `destination` on the host: into a temp file in the
/// same directory created with the final owner, group and mode, checked
/// (length and SHA-256: a dropped channel looks like end of input to the
/// host) and flushed to disk, then renamed into place. A cut upload leaves
/// the old file, or none, never a short one; the next upload removes any
/// temp file a killed one left. The plaintext travels only on the SSH
/// channel's stdin.
async fn upload(connection: &Connection, placement: &Placement, plaintext: &[u8]) -> Result<()> {
    let Placement {
        destination,
        owner,
        group,
        ..
    } = placement;
    let mode = placement.mode_string();
    let dir = match destination.rsplit_once('/') {
        Some(("", _)) => "/".to_owned(),
        Some((dir, _)) => dir.to_owned(),
        None => bail!("destination {destination} is not absolute"),
    };
    let tmp = format!("{destination}.prov-tmp.{}", uuid::Uuid::new_v4().simple());
    let script = format!(
        "set -e; umask 077; d={dir}; t={tmp}; [ -d \"$d\" ] || install -d -m 0755 \"$d\"; \
         trap 'rm -f \"$t\"' EXIT; trap 'exit 1' HUP INT PIPE TERM; \
         rm -f {dest}.prov-tmp.*; : > \"$t\"; chown {owner}:{group} \"$t\"; \
         chmod {mode} \"$t\"; cat > \"$t\"; \
         n=$(wc -c < \"$t\"); [ \"$n\" -eq {len} ] || {{ echo \"received $n of {len} bytes\" >&2; exit 1; }}; \
         h=$(sha256sum < \"$t\"); [ \"${{h%% *}}\" = {hash} ] || {{ echo 'received bytes differ from those sent' >&2; exit 1; }}; \
         sync \"$t\" 2>/dev/null || sync; mv -f \"$t\" {dest}; sync \"$d\" 2>/dev/null || sync",
        dir = shell_quote(&dir),
        tmp = shell_quote(&tmp),
        owner = shell_quote(owner),
        group = shell_quote(group),
        mode = shell_quote(&mode),
        dest = shell_quote(destination),
        len = plaintext.len(),
        hash = prov_provider::sha256_hex(plaintext),
    );
    let command = connection.privileged(&format!("sh -c {}", shell_quote(&script)));
    let output = connection
        .exec_with_input(&command, plaintext, &|_| {})
        .await?;
    if !output.success() {
        bail!(
            "writing {destination} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The owners and groups of the uploads in `changes` that do not exist on
/// the host (yet), in one command.
async fn absent_accounts(
    connection: &Connection,
    changes: &[&SecretChange],
    values: &Values,
) -> Result<BTreeSet<String>> {
    let mut users = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for change in changes.iter().filter(|c| c.action == SecretAction::Upload) {
        if let Some(value) = values.values.get(&value_key(change)) {
            users.insert(value.placement.owner.clone());
            groups.insert(value.placement.group.clone());
        }
    }
    if users.is_empty() {
        return Ok(BTreeSet::new());
    }
    let quote = |set: &BTreeSet<String>| {
        set.iter()
            .map(|s| shell_quote(s))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let script = format!(
        "for u in {}; do getent passwd \"$u\" >/dev/null || echo \"$u\"; done; \
         for g in {}; do getent group \"$g\" >/dev/null || echo \"$g\"; done",
        quote(&users),
        quote(&groups)
    );
    let output = connection
        .exec(&format!("sh -c {}", shell_quote(&script)))
        .await?;
    if !output.success() {
        bail!(
            "asking the host which accounts exist failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Removes `destination` on the host.
async fn remove(connection: &Connection, destination: &str) -> Result<()> {
    let command = connection.privileged(&format!("rm -f {}", shell_quote(destination)));
    let output = connection.exec(&command).await?;
    if !output.success() {
        bail!(
            "removing {destination} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
