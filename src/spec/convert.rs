//! Conversion of a checked raw spec into the model the planner consumes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use prov_provider::{
    sha256_hex, Address, Attributes, DerivedName, NameForm, Reference, ResourceConfig,
};
use serde_json::{Map, Value};

use super::check::{Checked, KEY_PAIR, SECURITY_GROUP};
use prov_provider_ec2::Ec2Settings;
use prov_provider_local::LocalSettings;

use super::model::{HostInfo, OutputSpec, ProviderSettings, Spec, StateSettings};
use super::raw::{RawHost, RawSpec, Tags};
use crate::providers::Target;
/// Default state directory, relative to the spec's directory.
const DEFAULT_STATE_DIR: &str = ".prov";

/// Builds the [`Spec`]; `raw` must have passed [`super::check::check`],
/// which produced `checked`.
pub(crate) fn convert(
    raw: &RawSpec,
    checked: &Checked,
    path: &Path,
    base_dir: &Path,
    source_hash: String,
) -> Spec {
    let deployment = raw.deployment.get_ref().clone();
    let mut resources = Vec::new();
    let mut hosts = Vec::new();
    for (name, kp) in &raw.key_pairs {
        let name = name.get_ref();
        let address = Address::new(KEY_PAIR, name, None);
        let mut attributes = Attributes::new();
        attributes.insert("key_name".into(), format!("{deployment}-{name}").into());
        let key = checked.public_keys.get(name).cloned().unwrap_or_default();
        attributes.insert("public_key".into(), key.into());
        attributes.insert("tags".into(), tags(&deployment, &address, &kp.tags, false));
        let mut names = tag_names(&kp.tags, false);
        names.push(DerivedName::attribute("key_name", NameForm::DeploymentName));
        resources.push(plain(address, attributes, names));
    }
    for (name, sg) in &raw.security_groups {
        let name = name.get_ref();
        let address = Address::new(SECURITY_GROUP, name, None);
        let mut attributes = Attributes::new();
        attributes.insert("group_name".into(), format!("{deployment}-{name}").into());
        let description = sg
            .description
            .as_ref()
            .map_or(prov_provider_ec2::DEFAULT_DESCRIPTION, |d| {
                d.get_ref().as_str()
            });
        attributes.insert("description".into(), description.into());
        if let Some(vpc) = &sg.vpc_id {
            attributes.insert("vpc_id".into(), vpc.get_ref().as_str().into());
        }
        let rules = checked
            .rules
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ingress = rules.iter().map(|r| r.to_json()).collect();
        attributes.insert("ingress".into(), Value::Array(ingress));
        attributes.insert("tags".into(), tags(&deployment, &address, &sg.tags, false));
        let mut names = tag_names(&sg.tags, false);
        names.push(DerivedName::attribute(
            "group_name",
            NameForm::DeploymentName,
        ));
        resources.push(plain(address, attributes, names));
    }
    for (name, host) in &raw.hosts {
        let name = name.get_ref();
        let parts = checked.host_parts.get(name).cloned().unwrap_or_default();
        let Some(target) = host.target() else {
            continue;
        };
        // One for every host of the group (`count`): what it holds is the
        // group's.
        let info = Arc::new(HostInfo {
            name: name.clone(),
            tags: user_tags(&host.tags),
            target,
            deploy: parts.deploy.clone(),
            ssh: parts.ssh.clone(),
            host_key: parts.host_key.clone(),
            health: parts.health.clone(),
            kubernetes: checked.kubernetes.hosts.get(name).cloned(),
        });
        for address in host_addresses(name, host) {
            match target {
                Target::Ec2 => {
                    resources.push(instance(raw, checked, &deployment, address.clone(), host));
                }
                Target::Local => resources.push(local_host(raw, address.clone(), host)),
                Target::Libvirt => resources.push(super::check_libvirt::vm(
                    raw,
                    &deployment,
                    address.clone(),
                    host,
                    base_dir,
                    host_dependencies(raw, host),
                )),
                Target::VirtualBox => resources.push(super::check_virtualbox::vm(
                    &deployment,
                    address.clone(),
                    host,
                    base_dir,
                    host_dependencies(raw, host),
                )),
                Target::Ssh => {}
            }
            hosts.push((address, Arc::clone(&info)));
        }
    }
    resources.sort_by(|a, b| a.address.cmp(&b.address));
    // Grown by doubling: up to half of it unused, at fleet scale MiB.
    resources.shrink_to_fit();
    // Collected, not inserted one by one: a map built in one go has full
    // nodes, one built by inserting in order half-empty ones.
    let hosts: BTreeMap<Address, Arc<HostInfo>> = hosts.into_iter().collect();
    Spec {
        source: path.to_owned(),
        deployment,
        source_hash,
        providers: ProviderSettings {
            ec2: raw.providers.ec2.as_ref().map(|e| Ec2Settings {
                region: e.region.as_ref().map(|v| v.get_ref().clone()),
                endpoint: e.endpoint.as_ref().map(|v| v.get_ref().clone()),
                profile: e.profile.as_ref().map(|v| v.get_ref().clone()),
            }),
            local: raw.providers.local.as_ref().map(|l| match &l.root {
                Some(root) => LocalSettings {
                    root: base_dir.join(root.get_ref()),
                },
                None => LocalSettings::default(),
            }),
            virtualbox: super::check_virtualbox::settings(raw, base_dir),
            libvirt: super::check_libvirt::settings(raw),
        },
        state: StateSettings {
            path: base_dir.join(
                raw.state
                    .as_ref()
                    .and_then(|s| s.path.as_ref())
                    .map_or(DEFAULT_STATE_DIR, |p| p.get_ref().as_str()),
            ),
            backend: state_backend(raw),
            encrypt_to: super::check_secrets::encrypt_to(raw),
            keep_versions: raw
                .state
                .as_ref()
                .and_then(|s| s.keep_versions.as_ref())
                .and_then(|k| u64::try_from(*k.get_ref()).ok()),
        },
        resources,
        hosts,
        outputs: outputs(raw),
        deploy: checked.deploy.clone(),
        secrets: checked.secrets.clone(),
        kubernetes: checked.kubernetes.clusters.clone(),
        moved: checked.moved.clone(),
        environments: checked.environments,
        cache: checked.cache.clone(),
        environment: None,
        env_templates: env_templates(raw),
    }
}

/// A host run as a namespace container by the `local` provider. The core
/// fills `authorized_keys` with the deployer's public key.
fn local_host(raw: &RawSpec, address: Address, host: &RawHost) -> ResourceConfig {
    let mut attributes = Attributes::new();
    attributes.insert("hostname".into(), address.machine_name().into());
    if let Some(fixed) = &host.address {
        attributes.insert("address".into(), fixed.get_ref().as_str().into());
    }
    attributes.insert("authorized_keys".into(), Value::Array(Vec::new()));
    ResourceConfig {
        address,
        provider: Target::Local.name().into(),
        kind: prov_provider_local::KIND.into(),
        attributes,
        references: BTreeMap::new(),
        depends_on: host_dependencies(raw, host),
        names: vec![DerivedName::attribute("hostname", NameForm::Machine)],
    }
}

/// The addresses of the hosts named in `host`'s `depends_on`.
fn host_dependencies(raw: &RawSpec, host: &RawHost) -> BTreeSet<Address> {
    let mut depends_on = BTreeSet::new();
    for dep in host.depends_on.iter().flat_map(|l| l.get_ref()) {
        if let Some(other) = raw.hosts.get(dep.get_ref().as_str()) {
            depends_on.extend(host_addresses(dep.get_ref(), other));
        }
    }
    depends_on
}

/// `NAME` without count, `NAME[0]..NAME[N-1]` with.
fn host_addresses(name: &str, host: &RawHost) -> Vec<Address> {
    match &host.count {
        None => vec![Address::host(name, None)],
        Some(n) => {
            let n = u32::try_from(*n.get_ref()).unwrap_or(0);
            (0..n).map(|i| Address::host(name, Some(i))).collect()
        }
    }
}

/// A virtual machine host (libvirt, VirtualBox): named
/// `prov-DEPLOYMENT-MACHINE` in its `name` attribute, referring to nothing.
pub(super) fn virtual_machine(
    address: Address,
    target: Target,
    kind: &str,
    attributes: Attributes,
    depends_on: BTreeSet<Address>,
) -> ResourceConfig {
    ResourceConfig {
        address,
        provider: target.name().into(),
        kind: kind.into(),
        attributes,
        references: BTreeMap::new(),
        depends_on,
        names: vec![DerivedName::attribute("name", NameForm::ProvMachine)],
    }
}

/// A resource whose kind is its address kind and that refers to nothing.
fn plain(address: Address, attributes: Attributes, names: Vec<DerivedName>) -> ResourceConfig {
    ResourceConfig {
        kind: address.kind.clone(),
        address,
        provider: Target::Ec2.name().into(),
        attributes,
        references: BTreeMap::new(),
        depends_on: BTreeSet::new(),
        names,
    }
}

fn instance(
    raw: &RawSpec,
    checked: &Checked,
    deployment: &str,
    address: Address,
    host: &RawHost,
) -> ResourceConfig {
    let name = address.name.clone();
    let mut attributes = Attributes::new();
    let mut references = BTreeMap::new();
    let mut depends_on = BTreeSet::new();
    let text = |v: &Option<toml::Spanned<String>>| v.as_ref().map(|v| v.get_ref().clone());
    if let Some(ami) = text(&host.ami) {
        attributes.insert("ami".into(), ami.into());
    }
    if let Some(instance_type) = text(&host.instance_type) {
        attributes.insert("instance_type".into(), instance_type.into());
    }
    if let Some(subnet) = text(&host.subnet) {
        attributes.insert("subnet_id".into(), subnet.into());
    }
    if let Some(kp) = &host.key_pair {
        let target = Address::new(KEY_PAIR, kp.get_ref(), None);
        attributes.insert("key_name".into(), target.to_string().into());
        depends_on.insert(target.clone());
        let reference = Reference {
            targets: vec![target],
            field: "key_name".into(),
            list: false,
        };
        references.insert("key_name".to_owned(), reference);
    }
    let groups: Vec<Address> = host
        .security_groups
        .iter()
        .flat_map(|l| l.get_ref())
        .map(|sg| Address::new(SECURITY_GROUP, sg.get_ref(), None))
        .collect();
    if !groups.is_empty() {
        let ids = groups
            .iter()
            .map(|a| Value::String(a.to_string()))
            .collect();
        attributes.insert("security_group_ids".into(), Value::Array(ids));
        depends_on.extend(groups.iter().cloned());
        let reference = Reference {
            targets: groups,
            field: "id".into(),
            list: true,
        };
        references.insert("security_group_ids".to_owned(), reference);
    }
    if let Some(user_data) = checked.user_data.get(&name) {
        attributes.insert("user_data".into(), user_data.as_str().into());
        let digest = sha256_hex(user_data.as_bytes());
        attributes.insert("user_data_sha256".into(), digest.into());
    }
    attributes.insert("tags".into(), tags(deployment, &address, &host.tags, true));
    depends_on.extend(host_dependencies(raw, host));
    ResourceConfig {
        address,
        provider: Target::Ec2.name().into(),
        kind: prov_provider_ec2::INSTANCE_KIND.into(),
        attributes,
        references,
        depends_on,
        names: tag_names(&host.tags, true),
    }
}

fn user_tags(tags: &Tags) -> BTreeMap<String, String> {
    tags.iter()
        .map(|(k, v)| {
            let value = crate::environments::render(v, crate::environments::DEFAULT_NAME);
            (k.get_ref().clone(), value)
        })
        .collect()
}

/// Every user tag value that names the environment (`${env}`), as
/// written, by host or resource address.
fn env_templates(raw: &RawSpec) -> Vec<crate::environments::Template> {
    let mut templates = Vec::new();
    let mut add = |address: &Address, tags: &Tags| {
        for (key, value) in tags {
            if crate::environments::names_env(value) {
                templates.push(crate::environments::Template {
                    address: address.clone(),
                    key: key.get_ref().clone(),
                    text: value.clone(),
                });
            }
        }
    };
    for (name, kp) in &raw.key_pairs {
        add(&Address::new(KEY_PAIR, name.get_ref(), None), &kp.tags);
    }
    for (name, sg) in &raw.security_groups {
        add(
            &Address::new(SECURITY_GROUP, name.get_ref(), None),
            &sg.tags,
        );
    }
    for (name, host) in &raw.hosts {
        for address in host_addresses(name.get_ref(), host) {
            add(&address, &host.tags);
        }
    }
    templates
}

/// User tags plus prov's: `prov:deployment`, `prov:address` and, for
/// instances, a default `Name` the user may override.
fn tags(deployment: &str, address: &Address, user: &Tags, name: bool) -> Value {
    let mut map = Map::new();
    if name {
        map.insert("Name".into(), format!("{deployment}-{address}").into());
    }
    for (k, v) in user {
        let value = crate::environments::render(v, crate::environments::DEFAULT_NAME);
        map.insert(k.get_ref().clone(), value.into());
    }
    map.insert("prov:deployment".into(), deployment.into());
    map.insert("prov:address".into(), address.to_string().into());
    Value::Object(map)
}

/// The tags [`tags`] makes from the address: `prov:address`, and `Name`
/// unless the user sets it.
fn tag_names(user: &Tags, name: bool) -> Vec<DerivedName> {
    let mut names = vec![DerivedName::key("tags", "prov:address", NameForm::Address)];
    if name && !user.keys().any(|k| k.get_ref() == "Name") {
        names.push(DerivedName::key(
            "tags",
            "Name",
            NameForm::DeploymentAddress,
        ));
    }
    names
}

/// `ADDRESS.ATTRIBUTE`, split at the last dot.
fn outputs(raw: &RawSpec) -> BTreeMap<String, OutputSpec> {
    raw.outputs
        .iter()
        .filter_map(|(name, value)| {
            let (address, attribute) = value.get_ref().rsplit_once('.')?;
            let spec = OutputSpec {
                address: address.to_owned(),
                attribute: attribute.to_owned(),
            };
            Some((name.get_ref().clone(), spec))
        })
        .collect()
}

/// `[state] backend = "s3"` settings (checked already), or embedded.
fn state_backend(raw: &RawSpec) -> super::model::StateBackendSettings {
    let Some(state) = raw.state.as_ref().filter(|s| {
        s.backend
            .as_ref()
            .is_some_and(|b| b.get_ref() == super::check::S3_BACKEND)
    }) else {
        return super::model::StateBackendSettings::Embedded;
    };
    let get = |v: &Option<super::raw::Str>| v.as_ref().map(|v| v.get_ref().clone());
    let key = get(&state.key).unwrap_or_else(|| format!("{}/state.json", raw.deployment.get_ref()));
    let mut settings = super::model::S3Settings::new(get(&state.bucket).unwrap_or_default(), key);
    settings.region = get(&state.region);
    settings.endpoint = get(&state.endpoint);
    settings.profile = get(&state.profile);
    settings.workspace = get(&state.workspace);
    super::model::StateBackendSettings::S3(settings)
}
