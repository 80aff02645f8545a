//! One resource's change: create, update, replace or delete, with state saved
//! around every provider call.

use anyhow::{bail, Context, Result};
use prov_provider::{Address, Change, CreateRequest, Provider, ResourceConfig, UpdateRequest};
use prov_state::{ResourceRecord, ResourceStatus, StateDocument};
use serde_json::Value;
use tokio::sync::Mutex;

use super::StateSession;

/// Carries out `action` on `address`; returns the provider id afterwards.
pub(super) async fn run(
    provider: &dyn Provider,
    session: &Mutex<StateSession>,
    address: &Address,
    action: Change,
    config: Option<&ResourceConfig>,
) -> Result<Option<String>> {
    let config = || config.with_context(|| format!("the plan has no configuration for {address}"));
    match action {
        Change::NoOp => Ok(None),
        Change::Create => create(provider, session, config()?).await.map(Some),
        Change::Update => update(provider, session, config()?).await.map(Some),
        Change::Replace => {
            delete(provider, session, address, false).await?;
            create(provider, session, config()?).await.map(Some)
        }
        Change::Delete => delete(provider, session, address, true)
            .await
            .map(|()| None),
    }
}

/// The idempotency token of a create: derived from the lineage, the address,
/// its generation and the lineage's create counter, so it never repeats in a
/// lineage (also after `destroy` or `state rm` forgot the address), while a
/// create resumed after a crash reuses the token its record holds.
#[must_use]
pub fn idempotency_token(lineage: &str, address: &str, generation: u64, create: u64) -> String {
    let digest = prov_provider::sha256_hex(
        format!("{lineage}\n{address}\n{generation}\n{create}").as_bytes(),
    );
    format!("prov-{}", &digest[..40])
}

async fn create(
    provider: &dyn Provider,
    session: &Mutex<StateSession>,
    config: &ResourceConfig,
) -> Result<String> {
    let key = config.address.to_string();
    let kind = config.kind.as_str();

    // Record the intent (status `creating` with its token) before calling the
    // provider, unless an interrupted create of the same generation is pending.
    let (token, resumed) = {
        let mut s = session.lock().await;
        let lineage = s.doc.lineage.clone();
        let pending = s
            .doc
            .resources
            .get(&key)
            .filter(|r| r.status == ResourceStatus::Creating && r.id.is_none())
            .and_then(|r| r.token.clone());
        if let Some(token) = pending {
            (token, true)
        } else {
            let generation = s.doc.resources.get(&key).map_or(1, |r| r.generation + 1);
            s.doc.creates = s.doc.creates.saturating_add(1);
            let token = idempotency_token(&lineage, &key, generation, s.doc.creates);
            // A new object is a new machine: forget what was deployed on the
            // old one and the host key pinned for it.
            s.doc.hosts.remove(&key);
            s.doc.resources.insert(
                key.clone(),
                ResourceRecord {
                    provider: config.provider.clone(),
                    kind: config.kind.clone(),
                    id: None,
                    status: ResourceStatus::Creating,
                    generation,
                    token: Some(token.clone()),
                    attributes: Default::default(),
                    dependencies: config.depends_on.iter().map(ToString::to_string).collect(),
                },
            );
            s.save().await?;
            (token, false)
        }
    };

    if resumed {
        let mut found = provider
            .find_by_token(kind, std::slice::from_ref(&token))
            .await
            .with_context(|| format!("looking up the interrupted create of {key}"))?;
        if let Some(observed) = found.remove(&token) {
            tracing::info!(address = %key, id = %observed.id, "adopting the object of an interrupted create");
            let mut s = session.lock().await;
            if let Some(record) = s.doc.resources.get_mut(&key) {
                record.id = Some(observed.id.clone());
                record.status = ResourceStatus::Ready;
                record.attributes = observed.attributes;
            }
            s.save().await?;
            return Ok(observed.id);
        }
    }

    let desired = {
        let s = session.lock().await;
        config.resolve(|target, field| lookup(&s.doc, target, field))
    };
    if !desired.unknown.is_empty() {
        bail!(
            "{key}: cannot resolve {} (the resources referred to do not exist)",
            desired
                .unknown
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    crate::crashpoint::reached("before-create").await;
    let result = provider
        .create(CreateRequest {
            address: &config.address,
            kind,
            token: &token,
            attributes: &desired.attributes,
        })
        .await;
    crate::crashpoint::reached("after-create").await;
    let mut s = session.lock().await;
    let record = s
        .doc
        .resources
        .get_mut(&key)
        .with_context(|| format!("{key} vanished from state during create"))?;
    match result {
        Ok(observed) => {
            record.id = Some(observed.id.clone());
            record.status = ResourceStatus::Ready;
            record.attributes = observed.attributes;
            s.save().await?;
            Ok(observed.id)
        }
        Err(error) => {
            record.status = ResourceStatus::Tainted;
            s.save().await?;
            Err(error).with_context(|| format!("creating {key}"))
        }
    }
}

async fn update(
    provider: &dyn Provider,
    session: &Mutex<StateSession>,
    config: &ResourceConfig,
) -> Result<String> {
    let key = config.address.to_string();
    let (id, current, desired) = {
        let s = session.lock().await;
        let record = s
            .doc
            .resources
            .get(&key)
            .with_context(|| format!("{key} is not in state"))?;
        let id = record
            .id
            .clone()
            .with_context(|| format!("{key} has no id in state"))?;
        let desired = config.resolve(|target, field| lookup(&s.doc, target, field));
        (id, record.attributes.clone(), desired)
    };
    if !desired.unknown.is_empty() {
        bail!("{key}: cannot resolve {:?}", desired.unknown);
    }
    let changes = provider.diff(&config.kind, &desired, &current)?;
    if changes.is_empty() {
        return Ok(id);
    }
    crate::crashpoint::reached("before-update").await;
    let observed = provider
        .update(UpdateRequest {
            address: &config.address,
            kind: &config.kind,
            id: &id,
            attributes: &desired.attributes,
            changes: &changes,
        })
        .await
        .with_context(|| format!("updating {key}"))?;
    crate::crashpoint::reached("after-update").await;
    let mut s = session.lock().await;
    if let Some(record) = s.doc.resources.get_mut(&key) {
        record.attributes.extend(observed.attributes);
        record.dependencies = config.depends_on.iter().map(ToString::to_string).collect();
    }
    s.save().await?;
    Ok(id)
}

/// Deletes the object at `address`. With `forget`, the record goes too;
/// otherwise (a replacement) it stays, without id, for the create that follows.
async fn delete(
    provider: &dyn Provider,
    session: &Mutex<StateSession>,
    address: &Address,
    forget: bool,
) -> Result<()> {
    let key = address.to_string();
    let target = {
        let s = session.lock().await;
        s.doc
            .resources
            .get(&key)
            .and_then(|r| r.id.clone().map(|id| (r.kind.clone(), id)))
    };
    if let Some((kind, id)) = target {
        crate::crashpoint::reached("before-delete").await;
        provider
            .delete(&kind, &id)
            .await
            .with_context(|| format!("destroying {key} ({id})"))?;
        crate::crashpoint::reached("after-delete").await;
    }
    let mut s = session.lock().await;
    if forget {
        s.doc.resources.remove(&key);
        s.doc.hosts.remove(&key);
    } else if let Some(record) = s.doc.resources.get_mut(&key) {
        record.id = None;
        record.status = ResourceStatus::Tainted;
        record.attributes.clear();
    }
    s.save().await?;
    Ok(())
}

/// A reference target's field from state (all dependencies are done by the
/// time a resource runs).
fn lookup(doc: &StateDocument, target: &Address, field: &str) -> Option<Value> {
    let record = doc.resources.get(&target.to_string())?;
    if record.status != ResourceStatus::Ready {
        return None;
    }
    if field == "id" {
        record.id.clone().map(Value::from)
    } else {
        record.attributes.get(field).cloned()
    }
}
