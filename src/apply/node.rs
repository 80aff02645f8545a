//! One resource's change: create, update, replace or delete, with state saved
//! around every provider call.

use anyhow::{bail, Context, Result};
use prov_provider::{Address, Change, CreateRequest, Provider, ResourceConfig, UpdateRequest};
use prov_state::{NewResource, ResourceStatus, StateDocument};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::session::StateSession;

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

async fn create(
    provider: &dyn Provider,
    session: &Mutex<StateSession>,
    config: &ResourceConfig,
) -> Result<String> {
    let address = &config.address;
    let kind = config.kind.as_str();

    // Record the intent (status `creating` with its token) before calling the
    // provider, unless an interrupted create of the same generation is pending.
    let (token, resumed) = {
        let mut s = session.lock().await;
        if let Some(token) = s.doc.pending_create(address) {
            (token.to_owned(), true)
        } else {
            let dependencies: Vec<Address> = config.depends_on.iter().cloned().collect();
            let token = s.doc.record_intent(
                address,
                NewResource {
                    provider: &config.provider,
                    kind,
                    dependencies: &dependencies,
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
            .with_context(|| format!("looking up the interrupted create of {address}"))?;
        if let Some(observed) = found.remove(&token) {
            tracing::info!(%address, id = %observed.id, "adopting the object of an interrupted create");
            let mut s = session.lock().await;
            s.doc
                .record_created(address, &observed.id, observed.attributes);
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
            "{address}: cannot resolve {} (the resources referred to do not exist)",
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
            address,
            kind,
            token: &token,
            attributes: &desired.attributes,
        })
        .await;
    crate::crashpoint::reached("after-create").await;
    let mut s = session.lock().await;
    let recorded = match &result {
        Ok(observed) => s
            .doc
            .record_created(address, &observed.id, observed.attributes.clone()),
        Err(_) => s.doc.record_tainted(address),
    };
    if !recorded {
        bail!("{address} vanished from state during create");
    }
    s.save().await?;
    match result {
        Ok(observed) => Ok(observed.id),
        Err(error) => Err(error).with_context(|| format!("creating {address}")),
    }
}

async fn update(
    provider: &dyn Provider,
    session: &Mutex<StateSession>,
    config: &ResourceConfig,
) -> Result<String> {
    let key = &config.address;
    let (id, current, desired) = {
        let s = session.lock().await;
        let record = s
            .doc
            .resources
            .get(key)
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
    let dependencies: Vec<Address> = config.depends_on.iter().cloned().collect();
    let mut s = session.lock().await;
    s.doc
        .record_updated(key, observed.attributes, &dependencies);
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
    let key = address;
    let target = {
        let s = session.lock().await;
        s.doc
            .resources
            .get(key)
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
        s.doc.forget(address);
    } else {
        s.doc.record_deleted_for_replacement(address);
    }
    s.save().await?;
    Ok(())
}

/// A reference target's field from state (all dependencies are done by the
/// time a resource runs).
fn lookup(doc: &StateDocument, target: &Address, field: &str) -> Option<Value> {
    let record = doc.resources.get(target)?;
    if record.status != ResourceStatus::Ready {
        return None;
    }
    if field == "id" {
        record.id.clone().map(Value::from)
    } else {
        record.attributes.get(field).cloned()
    }
}
