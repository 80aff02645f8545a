//! Storing a version (whole or as a patch, in one transaction) and
//! pruning old ones.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{
    db_err, decode_header, decode_serial, latest_serial, latest_value, packed, rebuild, Cache,
    NewVersion, CHAIN, HISTORY, LATEST, META, PATCHES, VERSIONS,
};
use crate::delta::{self, Step};
use crate::{writing, StateError};

/// Checks `new` against the stored latest version (`latest`, with `stored` bytes).
fn check_successor(
    latest: u64,
    stored: &serde_json::Value,
    new: &NewVersion,
) -> Result<(), StateError> {
    let header = decode_header(latest, stored)?;
    writing::check_successor(&header.lineage, latest, &new.lineage, new.serial)
}

/// Stores `new` as the latest version (one transaction), then flushes: whole
/// or as a patch from the latest, as [`delta::step`] decides.
pub(in crate::embedded) fn write(
    db: &sled::Db,
    path: &Path,
    new: &NewVersion,
    cache: &mut Cache,
) -> Result<(), StateError> {
    let versions = db.open_tree(VERSIONS).map_err(db_err(path))?;
    let patches = db.open_tree(PATCHES).map_err(db_err(path))?;
    let history = db.open_tree(HISTORY).map_err(db_err(path))?;
    let meta = db.open_tree(META).map_err(db_err(path))?;
    let latest = latest_serial(db, path)?;
    let prev = match (cache.latest.take(), latest) {
        (Some((serial, value)), Some(latest)) if serial == latest => Some((serial, value)),
        (_, None) => None,
        (_, Some(_)) => latest_value(db, path)?,
    };
    let chain = meta
        .get(CHAIN)
        .map_err(db_err(path))?
        .map(|v| decode_serial(&v))
        .transpose()?
        .unwrap_or(0);
    let step = match prev {
        Some((latest, value)) => {
            check_successor(latest, &value, new)?;
            delta::step(value, &new.value, new.json.len(), chain)
        }
        None => Step::Whole,
    };
    let stored = match &step {
        Step::Whole => packed::pack(&new.json)?,
        Step::Patch { ops, .. } => packed::pack(ops)?,
    };
    let key = new.serial.to_be_bytes();
    let result = (&versions, &patches, &history, &meta).transaction(|(v, p, h, m)| {
        let now = m
            .get(LATEST)?
            .map(|l| decode_serial(&l))
            .transpose()
            .map_err(ConflictableTransactionError::Abort)?;
        if now != latest {
            return Err(ConflictableTransactionError::Abort(StateError::Conflict(
                format!(
                    "the stored state changed while writing version {} (another writer?)",
                    new.serial
                ),
            )));
        }
        let chain = match &step {
            Step::Whole => {
                v.insert(&key, stored.as_slice())?;
                0
            }
            Step::Patch { chain, .. } => {
                p.insert(&key, stored.as_slice())?;
                *chain
            }
        };
        h.insert(&key, new.entry.as_slice())?;
        m.insert(CHAIN, &chain.to_be_bytes())?;
        m.insert(LATEST, &key)?;
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TransactionError::Abort(e)) => return Err(e),
        Err(TransactionError::Storage(e)) => return Err(db_err(path)(e)),
    }
    db.flush().map_err(db_err(path))?;
    cache.latest = Some((new.serial, new.value.clone()));
    Ok(())
}

/// Removes every version older than the newest `keep` (at least one is
/// kept), making the oldest one kept whole first. Returns how many versions
/// were removed.
pub(in crate::embedded) fn prune(db: &sled::Db, path: &Path, keep: u64) -> Result<u64, StateError> {
    let keep = keep.max(1);
    let Some(latest) = latest_serial(db, path)? else {
        return Ok(0);
    };
    let Some(first) = latest.checked_sub(keep - 1) else {
        return Ok(0);
    };
    let versions = db.open_tree(VERSIONS).map_err(db_err(path))?;
    let patches = db.open_tree(PATCHES).map_err(db_err(path))?;
    let history = db.open_tree(HISTORY).map_err(db_err(path))?;
    let below = |tree: &sled::Tree| -> Result<Vec<sled::IVec>, StateError> {
        tree.range(..first.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()
            .map_err(db_err(path))
    };
    let (old_versions, old_patches, old_history) =
        (below(&versions)?, below(&patches)?, below(&history)?);
    if old_history.is_empty() && old_versions.is_empty() && old_patches.is_empty() {
        return Ok(0);
    }
    let whole = match versions.get(first.to_be_bytes()).map_err(db_err(path))? {
        Some(_) => None,
        None => {
            let value = rebuild(db, path, first)?.ok_or_else(|| {
                StateError::Corrupt(format!(
                    "version {first} cannot be rebuilt to prune before it"
                ))
            })?;
            Some(packed::pack(&delta::encode(&value)?)?)
        }
    };
    let key = first.to_be_bytes();
    let result = (&versions, &patches, &history).transaction(|(v, p, h)| {
        if let Some(whole) = &whole {
            v.insert(&key, whole.as_slice())?;
            p.remove(&key)?;
        }
        for k in &old_versions {
            v.remove(k)?;
        }
        for k in &old_patches {
            p.remove(k)?;
        }
        for k in &old_history {
            h.remove(k)?;
        }
        Ok::<(), ConflictableTransactionError<StateError>>(())
    });
    match result {
        Ok(()) => {}
        Err(TransactionError::Abort(e)) => return Err(e),
        Err(TransactionError::Storage(e)) => return Err(db_err(path)(e)),
    }
    db.flush().map_err(db_err(path))?;
    Ok(u64::try_from(old_history.len()).unwrap_or(u64::MAX))
}
