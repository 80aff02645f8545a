//! Every way a state document changes: intent before a create, the object
//! created, updated, deleted or forgotten, what refresh observed, what was
//! deployed on a host. No other module writes the document's fields.

use chrono::{DateTime, Utc};
use prov_provider::Address;
use serde_json::Value;

use crate::document::{Goal, HostRecord, ReachRecord, ResourceRecord, ResourceStatus};
use crate::{SecretRecord, StateDocument};

/// The idempotency token of a create: derived from the lineage, the address,
/// its generation and the lineage's create counter, so it never repeats in a
/// lineage (also after `destroy` or `state rm` forgot the address), while a
/// create resumed after a crash reuses the token its record holds.
#[must_use]
pub fn idempotency_token(lineage: &str, address: &Address, generation: u64, create: u64) -> String {
    let digest = prov_provider::sha256_hex(
        format!("{lineage}\n{address}\n{generation}\n{create}").as_bytes(),
    );
    format!("prov-{}", &digest[..40])
}

/// What a new resource is: its provider, kind and dependencies.
#[derive(Debug, Clone, Copy)]
pub struct NewResource<'a> {
    /// Provider name (`ec2`).
    pub provider: &'a str,
    /// The provider's kind name (`instance`).
    pub kind: &'a str,
    /// Addresses it depends on.
    pub dependencies: &'a [Address],
}

/// A system activated on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The system store path.
    pub system: String,
    /// The goal it was activated with.
    pub goal: Goal,
    /// The profile generation, when the goal made one.
    pub generation: Option<u64>,
    /// When.
    pub at: DateTime<Utc>,
}

/// What [`StateDocument::forget`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forgotten {
    /// A resource record was removed.
    pub resource: bool,
    /// A host record (pinned key, system, secrets) was removed.
    pub host: bool,
}

impl StateDocument {
    /// The token of a create that was interrupted before its outcome was
    /// recorded (a `creating` record without id), to resume with.
    #[must_use]
    pub fn pending_create(&self, address: &Address) -> Option<&str> {
        self.resources
            .get(address)
            .filter(|r| r.status == ResourceStatus::Creating && r.id.is_none())
            .and_then(|r| r.token.as_deref())
    }

    /// Records the intent to create `address` (status `creating`, a token
    /// unique in this lineage) and returns the token; saved before the
    /// provider is called, so a crash leaves a record to settle, never an
    /// orphan. A new object is a new machine: what was deployed on the old
    /// one and the host key pinned for it are forgotten.
    pub fn record_intent(&mut self, address: &Address, new: NewResource<'_>) -> String {
        let generation = self.resources.get(address).map_or(1, |r| r.generation + 1);
        self.creates = self.creates.saturating_add(1);
        let token = idempotency_token(&self.lineage, address, generation, self.creates);
        self.hosts.map_mut().remove(address);
        self.resources.map_mut().insert(
            address.clone(),
            ResourceRecord {
                provider: new.provider.to_owned(),
                kind: new.kind.to_owned(),
                id: None,
                status: ResourceStatus::Creating,
                generation,
                token: Some(token.clone()),
                attributes: Default::default(),
                dependencies: new.dependencies.to_vec(),
                names_from: None,
            },
        );
        token
    }

    /// Records that the object of `address` exists as `id` with
    /// `attributes` (a create that succeeded, or was found by its token).
    /// Returns whether the record exists.
    pub fn record_created(
        &mut self,
        address: &Address,
        id: &str,
        attributes: prov_provider::Attributes,
    ) -> bool {
        let Some(record) = self.resources.map_mut().get_mut(address) else {
            return false;
        };
        record.id = Some(id.to_owned());
        record.status = ResourceStatus::Ready;
        record.attributes = attributes;
        true
    }

    /// Records that a create or update of `address` failed part way: the
    /// next plan replaces it. Returns whether the record exists.
    pub fn record_tainted(&mut self, address: &Address) -> bool {
        let Some(record) = self.resources.map_mut().get_mut(address) else {
            return false;
        };
        record.status = ResourceStatus::Tainted;
        true
    }

    /// Records an update in place: the attributes the provider reported
    /// afterwards, and the dependencies it has now.
    pub fn record_updated(
        &mut self,
        address: &Address,
        attributes: prov_provider::Attributes,
        dependencies: &[Address],
    ) {
        if let Some(record) = self.resources.map_mut().get_mut(address) {
            record.attributes.extend(attributes);
            record.dependencies = dependencies.to_vec();
        }
    }

    /// Records that the object of `address` was deleted to be replaced: the
    /// record stays, without id (tainted), for the create that follows.
    pub fn record_deleted_for_replacement(&mut self, address: &Address) {
        if let Some(record) = self.resources.map_mut().get_mut(address) {
            record.id = None;
            record.status = ResourceStatus::Tainted;
            record.attributes.clear();
        }
    }

    /// Forgets `address` entirely: its resource and its host record (pinned
    /// key, system, secrets). A later object at this address is another
    /// machine.
    pub fn forget(&mut self, address: &Address) -> Forgotten {
        Forgotten {
            resource: self.resources.map_mut().remove(address).is_some(),
            host: self.hosts.map_mut().remove(address).is_some(),
        }
    }

    /// Moves the records at `from` to `to` (see
    /// [`StateDocument::move_pairs`]: a name without index moves every
    /// index): the resource record and the host record (pinned key, system,
    /// secrets) of each, the same machine at a new address; records that
    /// depend on a moved one now name its new address; a moved resource
    /// remembers where its object was created (`names_from`: it keeps the
    /// names made from that address). Returns the pairs moved, in address
    /// order.
    ///
    /// # Errors
    /// See [`crate::MoveError`]; then nothing moved.
    pub fn move_address(
        &mut self,
        from: &Address,
        to: &Address,
    ) -> Result<Vec<(Address, Address)>, crate::MoveError> {
        let pairs = self.move_pairs(from, to)?;
        for (source, target) in &pairs {
            if let Some(mut record) = self.resources.map_mut().remove(source) {
                let created_at = record.names_from.take().unwrap_or_else(|| source.clone());
                record.names_from = (&created_at != target).then_some(created_at);
                self.resources.map_mut().insert(target.clone(), record);
            }
            if let Some(host) = self.hosts.map_mut().remove(source) {
                self.hosts.map_mut().insert(target.clone(), host);
            }
        }
        for record in self.resources.map_mut().values_mut() {
            for dependency in &mut record.dependencies {
                if let Some((_, target)) = pairs.iter().find(|(source, _)| source == dependency) {
                    *dependency = target.clone();
                }
            }
        }
        Ok(pairs)
    }

    /// Forgets the host record of `address` (a host that left the spec and
    /// was cleaned of its secrets).
    pub fn forget_host(&mut self, address: &Address) {
        self.hosts.map_mut().remove(address);
    }

    /// Adopts an existing object as `address` (`prov import`): ready, with
    /// the attributes read, keeping the generation of a record it replaces.
    pub fn record_imported(
        &mut self,
        address: &Address,
        new: NewResource<'_>,
        id: &str,
        attributes: prov_provider::Attributes,
    ) {
        let generation = self.resources.get(address).map_or(0, |r| r.generation);
        self.resources.map_mut().insert(
            address.clone(),
            ResourceRecord {
                provider: new.provider.to_owned(),
                kind: new.kind.to_owned(),
                id: Some(id.to_owned()),
                status: ResourceStatus::Ready,
                generation,
                token: None,
                attributes,
                dependencies: new.dependencies.to_vec(),
                names_from: None,
            },
        );
    }

    /// Refresh found the object of an interrupted create by its token.
    pub fn record_found_by_token(
        &mut self,
        address: &Address,
        id: &str,
        attributes: prov_provider::Attributes,
    ) {
        if let Some(record) = self.resources.map_mut().get_mut(address) {
            record.id = Some(id.to_owned());
            record.attributes.extend(attributes);
            if record.status == ResourceStatus::Creating {
                record.status = ResourceStatus::Ready;
            }
        }
    }

    /// Refresh read the object of `address`: `attributes` are what it has now
    /// (recorded ones merged with observed ones).
    pub fn record_observed(
        &mut self,
        address: &Address,
        id: &str,
        attributes: prov_provider::Attributes,
    ) {
        if let Some(record) = self.resources.map_mut().get_mut(address) {
            record.attributes = attributes;
            record.id = Some(id.to_owned());
        }
    }

    /// Refresh found the object of `address` gone: its resource record goes
    /// (the host record stays until the host is dealt with).
    pub fn record_gone(&mut self, address: &Address) {
        self.resources.map_mut().remove(address);
    }

    /// Records where prov reached `address` over SSH and the keys it checked
    /// or accepted (pinned from now on).
    pub fn record_reached(
        &mut self,
        address: &Address,
        reach: ReachRecord,
        host_key: &str,
        jump_host_key: Option<&str>,
    ) {
        let host = self.host_mut(address);
        host.reach = Some(reach);
        host.host_key = Some(host_key.to_owned());
        if let Some(jump) = jump_host_key {
            host.jump_host_key = Some(jump.to_owned());
        }
    }

    /// Records a system activated on `address` by a deploy; a deploy whose
    /// goal made no generation keeps the recorded one.
    pub fn record_deployed(&mut self, address: &Address, deployed: Deployed) {
        let host = self.host_mut(address);
        host.system = Some(deployed.system);
        host.goal = Some(deployed.goal);
        if deployed.generation.is_some() {
            host.generation = deployed.generation;
        }
        host.deployed_at = Some(deployed.at);
    }

    /// Records a system activated on `address` by `prov rollback`: the
    /// generation is the one the profile points at now (none if unknown).
    pub fn record_rolled_back(&mut self, address: &Address, deployed: Deployed) {
        let host = self.host_mut(address);
        host.system = Some(deployed.system);
        host.goal = Some(deployed.goal);
        host.generation = deployed.generation;
        host.deployed_at = Some(deployed.at);
    }

    /// Records secret `name` as uploaded to `address`.
    pub fn record_secret(&mut self, address: &Address, name: &str, secret: SecretRecord) {
        self.host_mut(address)
            .secrets
            .insert(name.to_owned(), secret);
    }

    /// Records secret `name` as deleted from `address`.
    pub fn forget_secret(&mut self, address: &Address, name: &str) {
        if let Some(host) = self.hosts.map_mut().get_mut(address) {
            host.secrets.remove(name);
        }
    }

    /// Makes this the state of the environment `environment` (or of none),
    /// or changes its record (`prov env extend`, a cancelled `env run`).
    pub fn set_environment(&mut self, environment: Option<crate::EnvironmentRecord>) {
        self.environment = environment;
    }

    /// Sets the output values.
    pub fn set_outputs(&mut self, outputs: impl IntoIterator<Item = (String, Value)>) {
        *self.outputs.map_mut() = outputs.into_iter().collect();
    }

    /// Gives the state its secret key (hex) unless it has one: the key of
    /// the secrets' keyed hashes and of the MACs binding saved plans.
    pub fn ensure_secret_key(&mut self, key: String) {
        if self.secret_hmac_key.is_none() {
            self.secret_hmac_key = Some(key);
        }
    }

    /// Sets the secret key to `key` (none included): a saved plan's prior
    /// state holds none, and takes the stored state's when applied.
    pub fn set_secret_key(&mut self, key: Option<String>) {
        self.secret_hmac_key = key;
    }

    /// Records the serial this document was stored under.
    pub fn set_serial(&mut self, serial: u64) {
        self.serial = serial;
    }

    /// The envelope that stores `self` encrypted: lineage, serial and
    /// deployment in the clear (for history and checks), `sealed` (armored
    /// age ciphertext of the whole document) as its only content.
    #[must_use]
    pub fn envelope(&self, sealed: String) -> Self {
        let mut envelope = Self::new(&self.deployment);
        envelope.format_version = self.format_version;
        envelope.lineage.clone_from(&self.lineage);
        envelope.serial = self.serial;
        envelope.encrypted = Some(sealed);
        envelope
    }

    fn host_mut(&mut self, address: &Address) -> &mut HostRecord {
        self.hosts.map_mut().entry(address.clone()).or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn web() -> Address {
        "web[0]".parse().unwrap()
    }

    const NEW: NewResource<'static> = NewResource {
        provider: "ec2",
        kind: "instance",
        dependencies: &[],
    };

    #[test]
    fn a_token_never_repeats_in_a_lineage_also_after_forget() {
        let mut doc = StateDocument::new("d");
        let first = doc.record_intent(&web(), NEW);
        assert_eq!(doc.pending_create(&web()), Some(first.as_str()));
        doc.record_created(&web(), "i-1", Default::default());
        assert_eq!(doc.pending_create(&web()), None);
        doc.forget(&web());
        let second = doc.record_intent(&web(), NEW);
        assert_ne!(first, second);
    }

    #[test]
    fn a_new_object_forgets_the_old_machine() {
        let mut doc = StateDocument::new("d");
        doc.record_intent(&web(), NEW);
        doc.record_reached(&web(), ReachRecord::default(), "ssh-ed25519 AAAA", None);
        assert!(doc.hosts.contains_key(&web()));
        doc.record_deleted_for_replacement(&web());
        doc.record_intent(&web(), NEW);
        assert!(!doc.hosts.contains_key(&web()));
        assert_eq!(doc.resources[&web()].generation, 2);
    }

    #[test]
    fn a_key_that_is_not_an_address_is_an_error_not_skipped() {
        let json = r#"{"format_version":1,"lineage":"l","serial":1,"resources":{"not an address":{"provider":"ec2","kind":"instance","status":"ready"}}}"#;
        let error = serde_json::from_str::<StateDocument>(json).unwrap_err();
        assert!(
            error.to_string().contains("not a resource address"),
            "{error}"
        );
    }
}
