//! Phase 2 of planning, the resource diff: a pure function of the spec, the
//! refreshed state and the providers' schemas.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use prov_provider::{Address, Change, Desired, Provider, ResourceConfig};
use prov_state::{ResourceRecord, ResourceStatus, StateDocument};
use serde_json::Value;

use super::deploys::Systems;
use super::file::PlanFile;
use super::graph::topological;
use super::{Plan, Refreshed, ResourceChange, SecretChange, Summary, PLAN_FORMAT_VERSION};
use crate::providers::Providers;
use crate::select::Selection;
use crate::spec::Spec;

/// What to plan.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Which resources (`--on`).
    pub selection: Selection,
    /// Plan destroying instead of converging.
    pub destroy: bool,
    /// Resources to replace although nothing forces it (`--replace`).
    pub replace: BTreeSet<Address>,
}

/// The resource changes of a plan, and the desired configuration of every
/// resource created, updated or replaced (what apply calls the providers
/// with).
#[derive(Debug, Clone, Default)]
pub struct ResourceDiff {
    /// One change per resource that changes, by address.
    pub changes: BTreeMap<Address, ResourceChange>,
    /// Desired configuration by address, for creates, updates and
    /// replacements.
    pub configs: BTreeMap<Address, ResourceConfig>,
}

impl ResourceDiff {
    /// Whether `address` gets a new object (created or replaced): a new
    /// machine, with nothing deployed on it yet.
    #[must_use]
    pub fn is_new(&self, address: &Address) -> bool {
        self.changes
            .get(address)
            .is_some_and(|c| matches!(c.action, Change::Create | Change::Replace))
    }

    /// Whether `address` is changed in place.
    #[must_use]
    pub fn is_updated(&self, address: &Address) -> bool {
        self.changes
            .get(address)
            .is_some_and(|c| c.action == Change::Update)
    }
}

/// One resource as the providers are to see it: the spec's own, or a copy
/// with something added (see [`desired`]). Two words, whichever it is.
#[derive(Debug)]
pub enum DesiredConfig<'a> {
    /// The spec's configuration, as it is.
    Spec(&'a ResourceConfig),
    /// A copy with the deployer's key.
    Keyed(Box<ResourceConfig>),
}

impl Borrow<ResourceConfig> for DesiredConfig<'_> {
    fn borrow(&self) -> &ResourceConfig {
        match self {
            Self::Spec(config) => config,
            Self::Keyed(config) => config,
        }
    }
}

/// The spec's resources as the providers are to see them: machines prov
/// creates authorize `deployer_key` (the deployer's public key line), when
/// the run has one. Only those are copied (to add the key); every other
/// resource is the spec's own, borrowed: at fleet scale a copy of them all
/// was tens of MiB.
#[must_use]
pub fn desired<'a>(spec: &'a Spec, deployer_key: Option<&str>) -> Vec<DesiredConfig<'a>> {
    spec.resources
        .iter()
        .map(|resource| match deployer_key {
            Some(key)
                if crate::providers::Target::provider_receives_deployer_key(&resource.provider) =>
            {
                let mut resource = resource.clone();
                resource.attributes.insert(
                    "authorized_keys".into(),
                    Value::Array(vec![Value::from(key.to_owned())]),
                );
                DesiredConfig::Keyed(Box::new(resource))
            }
            _ => DesiredConfig::Spec(resource),
        })
        .collect()
}

/// Plans the resource changes only (no system deploys or secrets): the pure
/// part of planning, for tests and benchmarks.
///
/// # Errors
/// As [`diff`].
pub fn build(
    spec: &Spec,
    refreshed: &Refreshed,
    providers: &Providers,
    options: &BuildOptions,
) -> Result<PlanFile> {
    let resources = diff(spec, &spec.resources, refreshed, providers, options)?;
    Ok(assemble(
        spec,
        refreshed,
        options,
        resources,
        Systems::default(),
        Vec::new(),
        Vec::new(),
    ))
}

/// The changes that bring `refreshed` to `desired` (the spec's resources,
/// see [`desired`]: owned or borrowed).
///
/// # Errors
/// When a resource names a provider or kind that is not configured, the
/// dependency graph has a cycle, or `--on` matches nothing.
pub fn diff<C: Borrow<ResourceConfig>>(
    spec: &Spec,
    desired: &[C],
    refreshed: &Refreshed,
    providers: &Providers,
    options: &BuildOptions,
) -> Result<ResourceDiff> {
    let doc = &refreshed.doc;
    check_selection(spec, doc, &options.selection)?;
    check_replace(spec, options)?;
    let by_address: BTreeMap<&Address, &ResourceConfig> = desired
        .iter()
        .map(|c| {
            let c = c.borrow();
            (&c.address, c)
        })
        .collect();
    let mut diff = ResourceDiff::default();

    if !options.destroy {
        let selected = selected_with_dependencies(spec, &options.selection);
        let order = match topological(desired) {
            Ok(order) => order,
            Err(cycle) => bail!(
                "the dependency graph has a cycle through {}",
                cycle
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        for spec_config in order.into_iter().filter(|c| selected.contains(&c.address)) {
            let provider = providers.get(&spec_config.provider)?;
            let record = doc.resources.get(&spec_config.address);
            let gone = refreshed.gone.contains(&spec_config.address);
            let requested = options.replace.contains(&spec_config.address);
            // A moved object keeps the names it was created with; a new
            // object (a replacement) takes its own address's.
            let kept = record
                .and_then(|r| r.names_from.as_ref())
                .map(|from| spec_config.with_names_of(&spec.naming(), from));
            let mut planned = None;
            for config in kept.iter().chain([spec_config]) {
                let resolved = config.resolve(|target, field| {
                    lookup(target, field, &diff.changes, &by_address, doc)
                });
                let mut change = plan_one(provider.as_ref(), config, &resolved, record, gone)?;
                if requested {
                    requested_replacement(&mut change);
                }
                let replaces = matches!(change.action, Change::Replace | Change::Create);
                planned = Some((config, change));
                if !replaces {
                    break;
                }
            }
            let Some((config, change)) = planned else {
                continue;
            };
            if change.action != Change::NoOp {
                diff.configs.insert(config.address.clone(), config.clone());
                diff.changes.insert(config.address.clone(), change);
            }
        }
    }

    for address in deletions(spec, doc, options) {
        let Some(record) = doc.resources.get(&address) else {
            continue;
        };
        let reason = if options.destroy {
            "destroy requested"
        } else {
            "not in the spec"
        };
        diff.changes.insert(
            address.clone(),
            ResourceChange {
                address,
                provider: record.provider.clone(),
                kind: record.kind.clone(),
                action: Change::Delete,
                id: record.id.clone(),
                reason: Some(reason.to_owned()),
                attributes: Vec::new(),
                effects: Vec::new(),
            },
        );
    }
    Ok(diff)
}

/// One plan from the phases' parts: the resource diff, the system deploys
/// and the secret changes, with refresh's drift in scope.
#[must_use]
pub fn assemble(
    spec: &Spec,
    refreshed: &Refreshed,
    options: &BuildOptions,
    resources: ResourceDiff,
    systems: Systems,
    secrets: Vec<SecretChange>,
    certificates: Vec<super::clusters::CertificateChange>,
) -> PlanFile {
    let doc = &refreshed.doc;
    let mut drift: Vec<_> = refreshed
        .drift
        .iter()
        .filter(|d| in_scope(spec, &options.selection, &d.address, doc))
        .cloned()
        .chain(systems.drift)
        .collect();
    drift.sort_by(|a, b| a.address.cmp(&b.address));
    let changes: Vec<ResourceChange> = resources.changes.into_values().collect();
    let summary = Summary::of(&changes, &systems.deploys, &secrets, certificates.len());
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        prov_version: env!("CARGO_PKG_VERSION").to_owned(),
        deployment: spec.deployment.clone(),
        lineage: (doc.serial > 0 || !doc.resources.is_empty()).then(|| doc.lineage.clone()),
        serial: doc.serial,
        spec_hash: spec.source_hash.clone(),
        destroy: options.destroy,
        drift,
        changes,
        deploys: systems.deploys,
        secrets,
        certificates,
        moved: Vec::new(),
        summary,
    };
    PlanFile::new(plan, resources.configs)
}

/// Every `--replace` address must be a resource of the spec, within `--on`,
/// and not go with `--destroy`.
fn check_replace(spec: &Spec, options: &BuildOptions) -> Result<()> {
    if options.replace.is_empty() {
        return Ok(());
    }
    if options.destroy {
        bail!("--replace plans a replacement; it does not go with --destroy");
    }
    let selected = selected_with_dependencies(spec, &options.selection);
    for address in &options.replace {
        if spec.resources.iter().any(|r| &r.address == address) {
            if !selected.contains(address) {
                bail!("`--replace {address}` is outside the resources `--on` selects");
            }
            continue;
        }
        let instances: Vec<String> = spec
            .resources
            .iter()
            .filter(|r| r.address.kind == address.kind && r.address.name == address.name)
            .map(|r| r.address.to_string())
            .collect();
        if instances.is_empty() {
            bail!("`--replace {address}`: no resource of the spec has that address");
        }
        bail!(
            "`--replace {address}`: name one instance ({}); each is replaced only when named",
            instances.join(", ")
        );
    }
    Ok(())
}

/// Turns the planned change of an existing object into a replacement the
/// user asked for (`--replace`); a create stays a create.
fn requested_replacement(change: &mut ResourceChange) {
    match change.action {
        Change::Create | Change::Delete => {}
        Change::Replace => {
            let why = change.reason.take().unwrap_or_default();
            change.reason = Some(format!("{REQUESTED}; also {why}"));
        }
        Change::NoOp | Change::Update => {
            change.action = Change::Replace;
            change.reason = Some(REQUESTED.to_owned());
            change.effects.clear();
        }
    }
}

/// The reason of a replacement asked for with `--replace`.
pub const REQUESTED: &str = "requested with --replace";

/// The planned change for one resource in the spec.
fn plan_one(
    provider: &dyn Provider,
    config: &ResourceConfig,
    desired: &Desired,
    record: Option<&ResourceRecord>,
    gone: bool,
) -> Result<ResourceChange> {
    let mut change = ResourceChange {
        address: config.address.clone(),
        provider: config.provider.clone(),
        kind: config.kind.clone(),
        action: Change::NoOp,
        id: None,
        reason: None,
        attributes: Vec::new(),
        effects: Vec::new(),
    };
    let Some(record) = record else {
        change.action = Change::Create;
        change.reason = gone.then(|| "deleted outside prov".to_owned());
        change.attributes = provider.diff(&config.kind, desired, &BTreeMap::new())?;
        return Ok(change);
    };
    change.id.clone_from(&record.id);
    if record.status == ResourceStatus::Creating {
        change.action = Change::Create;
        change.reason = Some(
            "an earlier create was interrupted; it resumes with the same idempotency token"
                .to_owned(),
        );
        change.attributes = provider.diff(&config.kind, desired, &BTreeMap::new())?;
        return Ok(change);
    }
    if record.provider != config.provider || record.kind != config.kind {
        change.action = Change::Replace;
        change.reason = Some(format!(
            "it moves from {} {} to {} {}",
            record.provider, record.kind, config.provider, config.kind
        ));
        change.attributes = provider.diff(&config.kind, desired, &BTreeMap::new())?;
        return Ok(change);
    }
    let attributes = provider.diff(&config.kind, desired, &record.attributes)?;
    if record.status == ResourceStatus::Tainted {
        change.action = Change::Replace;
        change.reason = Some("tainted: an earlier create or update failed".to_owned());
        change.attributes = attributes;
        return Ok(change);
    }
    if attributes.is_empty() {
        return Ok(change);
    }
    let forcing: Vec<&str> = attributes
        .iter()
        .filter(|a| a.forces_replacement)
        .map(|a| a.name.as_str())
        .collect();
    if forcing.is_empty() {
        change.action = Change::Update;
        change.effects = provider.update_effects(&config.kind, &attributes);
    } else {
        change.action = Change::Replace;
        change.reason = Some(format!(
            "{} {} replacement",
            forcing.join(", "),
            if forcing.len() == 1 {
                "forces"
            } else {
                "force"
            }
        ));
    }
    change.attributes = attributes;
    Ok(change)
}

/// The value of `field` of `target`, when it is known before apply: from state
/// when the target stays, or from the target's own configuration when it is
/// created or replaced and the field is one the spec sets.
fn lookup(
    target: &Address,
    field: &str,
    changes: &BTreeMap<Address, ResourceChange>,
    desired: &BTreeMap<&Address, &ResourceConfig>,
    doc: &StateDocument,
) -> Option<Value> {
    let recreated = changes
        .get(target)
        .is_some_and(|c| matches!(c.action, Change::Create | Change::Replace));
    if recreated {
        let config = desired.get(target)?;
        if config.references.contains_key(field) {
            return None;
        }
        return config.attributes.get(field).cloned();
    }
    let record = doc.resources.get(target)?;
    if field == "id" {
        record.id.clone().map(Value::from)
    } else {
        record.attributes.get(field).cloned()
    }
}

/// The resources of the spec that `--on` selects, with what they depend on.
enum Selected<'a> {
    /// Every one (no `--on`).
    All,
    /// These (borrowed from the spec: at fleet scale a copy of every
    /// address is MiB).
    Only(BTreeSet<&'a Address>),
}

impl Selected<'_> {
    /// Whether the spec's resource at `address` is selected.
    fn contains(&self, address: &Address) -> bool {
        match self {
            Self::All => true,
            Self::Only(addresses) => addresses.contains(address),
        }
    }
}

/// Addresses in the spec selected by `selection`, plus everything they depend
/// on (transitively): a selected host is never created without its key pair.
fn selected_with_dependencies<'a>(spec: &'a Spec, selection: &Selection) -> Selected<'a> {
    if selection.is_all() {
        return Selected::All;
    }
    let by_address: BTreeMap<&Address, &ResourceConfig> =
        spec.resources.iter().map(|c| (&c.address, c)).collect();
    let mut stack: Vec<&Address> = spec
        .resources
        .iter()
        .filter(|c| selection.matches(&c.address, user_tags(spec, &c.address)))
        .map(|c| &c.address)
        .collect();
    let mut selected = BTreeSet::new();
    while let Some(address) = stack.pop() {
        if selected.insert(address) {
            if let Some(config) = by_address.get(address) {
                stack.extend(config.depends_on.iter());
            }
        }
    }
    Selected::Only(selected)
}

/// Addresses to delete: state records not in the spec (or all of them for
/// destroy) that the selection covers, plus, for a destroy, every recorded
/// resource that depends on one of those (it cannot outlive its dependency).
fn deletions(spec: &Spec, doc: &StateDocument, options: &BuildOptions) -> Vec<Address> {
    let in_spec: BTreeSet<&Address> = spec.resources.iter().map(|c| &c.address).collect();
    let mut doomed: BTreeSet<Address> = doc
        .resources
        .keys()
        .filter(|a| options.destroy || !in_spec.contains(a))
        .filter(|a| in_scope(spec, &options.selection, a, doc))
        .cloned()
        .collect();
    if options.destroy {
        loop {
            let dependents: Vec<Address> = doc
                .resources
                .iter()
                .filter(|(_, r)| r.dependencies.iter().any(|d| doomed.contains(d)))
                .map(|(k, _)| k)
                .filter(|a| !doomed.contains(a))
                .cloned()
                .collect();
            if dependents.is_empty() {
                break;
            }
            doomed.extend(dependents);
        }
    }
    doomed.into_iter().collect()
}

/// Every `--on` pattern must match something in the spec or in state.
fn check_selection(spec: &Spec, doc: &StateDocument, selection: &Selection) -> Result<()> {
    if selection.is_all() {
        return Ok(());
    }
    let recorded: Vec<Address> = doc
        .resources
        .keys()
        .chain(doc.hosts.keys())
        .cloned()
        .collect();
    let candidates: Vec<(&Address, BTreeMap<String, String>)> = spec
        .resources
        .iter()
        .map(|c| (&c.address, user_tags(spec, &c.address).clone()))
        .chain(spec.hosts.keys().map(|a| (a, user_tags(spec, a).clone())))
        .chain(recorded.iter().map(|a| (a, recorded_tags(doc, a))))
        .collect();
    let unmatched = selection.unmatched(&candidates);
    if !unmatched.is_empty() {
        bail!(
            "`--on {}` matches nothing: no resource or host in the spec or in state has that name, address or tag",
            unmatched.join(",")
        );
    }
    Ok(())
}

/// Whether a recorded or desired resource is covered by the selection.
fn in_scope(spec: &Spec, selection: &Selection, address: &Address, doc: &StateDocument) -> bool {
    if selection.is_all() {
        return true;
    }
    let tags = user_tags(spec, address);
    if tags.is_empty() {
        return selection.matches(address, &recorded_tags(doc, address));
    }
    selection.matches(address, tags)
}

/// The user tags of the host at `address` (none for other resources),
/// borrowed: a copy per resource was a good part of planning a fleet.
fn user_tags<'a>(spec: &'a Spec, address: &Address) -> &'a BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    spec.hosts.get(address).map_or(&NONE, |h| &h.tags)
}

fn recorded_tags(doc: &StateDocument, address: &Address) -> BTreeMap<String, String> {
    doc.resources
        .get(address)
        .and_then(|r| r.attributes.get("tags"))
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}
