//! Refresh: read the real objects behind every state record, in one batched
//! call per provider and kind, and settle interrupted creates by their tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use prov_provider::{diff_attributes, Address, Desired, Observed, Provider};
use prov_state::{ResourceStatus, StateDocument};
use tokio::task::JoinSet;

use super::{Drift, DriftKind};
use crate::providers::Providers;

/// State after refresh.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// The state with observed attributes merged in, objects that are gone
    /// removed, and interrupted creates settled. Shared with the stored
    /// document it came from until refresh changes something
    /// ([`Arc::make_mut`]): at fleet scale a copy is hundreds of MiB, and
    /// `--refresh=false` usually changes nothing.
    pub doc: Arc<StateDocument>,
    /// What changed outside prov.
    pub drift: Vec<Drift>,
    /// Addresses whose objects were deleted outside prov.
    pub gone: BTreeSet<Address>,
}

impl Refreshed {
    /// State taken as it is, without asking any provider.
    #[must_use]
    pub fn unrefreshed(doc: impl Into<Arc<StateDocument>>) -> Self {
        Self {
            doc: doc.into(),
            drift: Vec::new(),
            gone: BTreeSet::new(),
        }
    }
}

/// One batch: all records of one provider and kind.
#[derive(Default)]
struct Batch {
    /// (address, id) of records whose object should exist.
    by_id: Vec<(Address, String)>,
    /// (address, token) of records whose create may or may not have happened.
    by_token: Vec<(Address, String)>,
}

/// What one batch found.
struct Found {
    key: (String, String),
    by_id: BTreeMap<String, Observed>,
    by_token: BTreeMap<String, Observed>,
}

/// Reads every object recorded in `doc` (only records for which `in_scope`
/// holds) and returns the refreshed state, which shares `doc` until it
/// differs. Makes one `read` call and at most one `find_by_token` call per
/// provider and kind.
///
/// # Errors
/// When a provider call fails.
pub async fn refresh(
    doc: &Arc<StateDocument>,
    providers: &Providers,
    in_scope: impl Fn(&Address) -> bool,
) -> Result<Refreshed> {
    let mut batches: BTreeMap<(String, String), Batch> = BTreeMap::new();
    for (address, record) in &doc.resources {
        if !in_scope(address) {
            continue;
        }
        let batch = batches
            .entry((record.provider.clone(), record.kind.clone()))
            .or_default();
        match (&record.id, &record.token) {
            (Some(id), _) => batch.by_id.push((address.clone(), id.clone())),
            (None, Some(token)) => batch.by_token.push((address.clone(), token.clone())),
            (None, None) => {}
        }
    }

    let mut tasks = JoinSet::new();
    for (key, batch) in &batches {
        let provider: Arc<dyn Provider> = Arc::clone(providers.get(&key.0)?);
        let key = key.clone();
        let ids: Vec<String> = batch.by_id.iter().map(|(_, id)| id.clone()).collect();
        let tokens: Vec<String> = batch.by_token.iter().map(|(_, t)| t.clone()).collect();
        tasks.spawn(async move {
            let by_id = if ids.is_empty() {
                BTreeMap::new()
            } else {
                provider
                    .read(&key.1, &ids)
                    .await
                    .with_context(|| format!("reading {} {} objects", key.0, key.1))?
            };
            let by_token = if tokens.is_empty() {
                BTreeMap::new()
            } else {
                provider
                    .find_by_token(&key.1, &tokens)
                    .await
                    .with_context(|| format!("looking up interrupted {} creates", key.1))?
            };
            anyhow::Ok(Found {
                key,
                by_id,
                by_token,
            })
        });
    }

    let mut refreshed = Refreshed::unrefreshed(Arc::clone(doc));
    while let Some(joined) = tasks.join_next().await {
        let found = joined.context("a refresh task panicked")??;
        let provider = providers.get(&found.key.0)?;
        let schema = provider.schema(&found.key.1)?;
        let Some(batch) = batches.get(&found.key) else {
            continue;
        };
        for (address, id) in &batch.by_id {
            merge_read(&mut refreshed, schema, address, found.by_id.get(id));
        }
        for (address, token) in &batch.by_token {
            if let Some(observed) = found.by_token.get(token) {
                tracing::info!(%address, id = %observed.id, "found the object of an interrupted create");
                Arc::make_mut(&mut refreshed.doc).record_found_by_token(
                    address,
                    &observed.id,
                    observed.attributes.clone(),
                );
            }
        }
    }
    refreshed.drift.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(refreshed)
}

/// Merges one read result into the refreshed state: observed attributes
/// replace recorded ones (attributes a provider cannot read are kept), and
/// differences in non-computed attributes of a ready record are drift.
fn merge_read(
    refreshed: &mut Refreshed,
    schema: &[prov_provider::AttributeSchema],
    address: &Address,
    observed: Option<&Observed>,
) {
    let Some(record) = refreshed.doc.resources.get(address) else {
        return;
    };
    match observed {
        None => {
            if record.status == ResourceStatus::Ready {
                refreshed.drift.push(Drift {
                    address: address.clone(),
                    kind: DriftKind::Deleted,
                    attributes: Vec::new(),
                });
            }
            Arc::make_mut(&mut refreshed.doc).record_gone(address);
            refreshed.gone.insert(address.clone());
        }
        Some(observed) => {
            let mut attributes = record.attributes.clone();
            attributes.extend(observed.attributes.clone());
            if record.status == ResourceStatus::Ready {
                let now = Desired {
                    attributes: attributes.clone(),
                    unknown: BTreeSet::new(),
                };
                let changed = diff_attributes(schema, &now, &record.attributes);
                if !changed.is_empty() {
                    refreshed.drift.push(Drift {
                        address: address.clone(),
                        kind: DriftKind::Changed,
                        attributes: changed,
                    });
                }
            }
            Arc::make_mut(&mut refreshed.doc).record_observed(address, &observed.id, attributes);
        }
    }
}
