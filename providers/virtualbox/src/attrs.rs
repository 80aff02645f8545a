//! The attributes of a VM: schema, parsing and normalisation.

use std::ops::RangeInclusive;

use crate::error::config_error;
use crate::KIND;
use prov_provider::{
    Address, AttributeChange, AttributeProblem, AttributeReader, AttributeSchema, Attributes,
    ProviderError,
};

/// The VM's name in VirtualBox (`prov-DEPLOYMENT-HOST`).
pub(crate) const NAME: &str = "name";
/// The base: an appliance file (`.ova`/`.ovf`) to import, or the name of a
/// VM whose current snapshot is cloned (linked).
pub(crate) const BASE: &str = "base";
/// Virtual CPUs.
pub(crate) const CPUS: &str = "cpus";
/// Memory in MiB.
pub(crate) const MEMORY: &str = "memory";
/// The NAT forward's port on 127.0.0.1 (allocated when unset).
pub(crate) const SSH_PORT: &str = "ssh_port";
/// OpenSSH public key lines that may log in as root.
pub(crate) const AUTHORIZED_KEYS: &str = "authorized_keys";
/// Where to connect: always 127.0.0.1 (the NAT forward).
pub(crate) const SSH_HOST: &str = "ssh_host";
/// The public host key prov generated, `ssh-ed25519 AAAA…`.
pub(crate) const HOST_KEY: &str = "host_key";
/// VirtualBox's `VMState` (`running`, `poweroff`, …).
pub(crate) const STATE: &str = "state";
/// The VM's UUID (also its provider id).
pub(crate) const UUID: &str = "uuid";

/// The attributes that change with the VM powered off and started again.
pub(crate) const RESTARTING: &[&str] = &[CPUS, MEMORY, SSH_PORT, AUTHORIZED_KEYS];

/// The attributes of kind `vm`.
pub(crate) const SCHEMA: &[AttributeSchema] = &[
    AttributeSchema::force_new(NAME),
    AttributeSchema::force_new(BASE),
    AttributeSchema::in_place(CPUS),
    AttributeSchema::in_place(MEMORY),
    AttributeSchema::in_place(SSH_PORT),
    AttributeSchema::in_place(AUTHORIZED_KEYS),
    AttributeSchema::computed(SSH_HOST),
    AttributeSchema::computed(HOST_KEY),
    AttributeSchema::computed(STATE),
    AttributeSchema::computed(UUID),
];

/// Default virtual CPUs.
pub(crate) const DEFAULT_CPUS: u64 = 1;
/// Default memory in MiB.
pub(crate) const DEFAULT_MEMORY: u64 = 1024;

/// What a create or update asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VmSpec {
    pub name: String,
    pub base: String,
    pub cpus: u64,
    pub memory: u64,
    pub ssh_port: Option<u16>,
    pub authorized_keys: Vec<String>,
}

impl VmSpec {
    /// Whether `base` names an appliance file to import (else a VM to clone).
    pub(crate) fn imports(&self) -> bool {
        let lower = self.base.to_ascii_lowercase();
        lower.ends_with(".ova") || lower.ends_with(".ovf")
    }
}

/// The accepted numbers of virtual CPUs.
const CPU_RANGE: RangeInclusive<u64> = 1..=64;
/// The accepted memory sizes, in MiB.
const MEMORY_RANGE: RangeInclusive<u64> = 4..=2_097_152;
/// The accepted forwarded ports.
const PORT_RANGE: RangeInclusive<u64> = 1..=65_535;

/// What `base` names, for a spec that leaves it out.
const BASE_HELP: &str = "an appliance to import (base = \"nixos.ova\") or a VM with a snapshot to clone (base = \"nixos-base\")";

/// The VM the attributes of a create or update describe, or every problem
/// with them (the rules are written once, here: the spec check shows the
/// problems at their source, `create` and `update` refuse with the first).
fn read_vm(attributes: &Attributes) -> Result<VmSpec, Vec<AttributeProblem>> {
    let mut reader = AttributeReader::new(attributes);
    let name = reader.required_string(NAME, "the VM's name, `prov-DEPLOYMENT-HOST`");
    if name.chars().any(|c| c.is_control() || c == '"' || c == '/') {
        reader.invalid(NAME, format!("`{name}` is not usable as a VM name"));
    }
    let vm = VmSpec {
        name,
        base: reader.required_string(BASE, BASE_HELP),
        cpus: reader.number(CPUS, CPU_RANGE).unwrap_or(DEFAULT_CPUS),
        memory: reader
            .number(MEMORY, MEMORY_RANGE)
            .unwrap_or(DEFAULT_MEMORY),
        ssh_port: reader
            .number(SSH_PORT, PORT_RANGE)
            .and_then(|p| u16::try_from(p).ok()),
        authorized_keys: reader.authorized_keys(),
    };
    reader.finish(vm)
}

/// Every problem with the desired attributes of a `vm` (empty when they
/// make a VM): the one set of rules, for the spec check to show at their
/// source before `create` would refuse them.
#[must_use]
pub fn check_vm(attributes: &Attributes) -> Vec<AttributeProblem> {
    read_vm(attributes).err().unwrap_or_default()
}

/// Checks the attributes of a create or update.
pub(crate) fn parse_spec(
    resource: &Address,
    attributes: &Attributes,
) -> Result<VmSpec, ProviderError> {
    read_vm(attributes)
        .map_err(|problems| config_error(AttributeProblem::refusal(KIND, resource, &problems)))
}

/// Brings desired attributes into the form `read` reports: an unset
/// `ssh_port` keeps the current one (it is allocated at create), unset cpus
/// and memory are the defaults, key lines are trimmed.
pub(crate) fn normalize_desired(desired: &mut Attributes, current: &Attributes) {
    prov_provider::keep_current(desired, current, &[SSH_PORT]);
    prov_provider::set_default(desired, CPUS, DEFAULT_CPUS.into());
    prov_provider::set_default(desired, MEMORY, DEFAULT_MEMORY.into());
    prov_provider::normalize_authorized_keys(desired);
}

/// Whether applying `changes` restarts the VM.
pub(crate) fn restarts(changes: &[AttributeChange]) -> bool {
    changes
        .iter()
        .any(|c| !c.forces_replacement && RESTARTING.contains(&c.name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prov_provider::{diff_attributes, Desired};
    use serde_json::{json, Value};

    fn attrs(v: Value) -> Attributes {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn parses_and_defaults() {
        let web = Address::host("web", Some(0));
        let spec = parse_spec(
            &web,
            &attrs(json!({"name": "prov-d-web-0", "base": "/b/nixos.ova", "authorized_keys": [" k ", ""]})),
        )
        .unwrap();
        assert_eq!(spec.cpus, DEFAULT_CPUS);
        assert_eq!(spec.memory, DEFAULT_MEMORY);
        assert_eq!(spec.ssh_port, None);
        assert_eq!(spec.authorized_keys, ["k"]);
        assert!(spec.imports());
        for bad in [
            json!({"name": "prov-d-web-0"}),
            json!({"name": "a\"b", "base": "x"}),
            json!({"name": "n", "base": "x", "cpus": 0}),
            json!({"name": "n", "base": "x", "memory": "big"}),
            json!({"name": "n", "base": "x", "ssh_port": 70000}),
            json!({"name": "n", "base": "x", "authorized_keys": "k"}),
        ] {
            assert!(parse_spec(&web, &attrs(bad.clone())).is_err(), "{bad}");
        }
        let clone = parse_spec(
            &web,
            &attrs(json!({"name": "n", "base": "nixos-base", "cpus": 2})),
        )
        .unwrap();
        assert!(!clone.imports());
        assert_eq!(clone.cpus, 2);
    }

    #[test]
    fn allocated_port_is_not_a_change_and_memory_restarts() {
        let current = attrs(json!({
            "name": "prov-d-web-0", "base": "/b.ova", "cpus": 1, "memory": 1024,
            "ssh_port": 40001, "authorized_keys": ["k"], "ssh_host": "127.0.0.1",
            "host_key": "ssh-ed25519 AAAA", "state": "running", "uuid": "u",
        }));
        let mut desired = Desired {
            attributes: attrs(
                json!({"name": "prov-d-web-0", "base": "/b.ova", "authorized_keys": ["k "]}),
            ),
            unknown: Default::default(),
        };
        normalize_desired(&mut desired.attributes, &current);
        assert!(diff_attributes(SCHEMA, &desired, &current).is_empty());
        desired.attributes.insert(MEMORY.into(), json!(2048));
        let changes = diff_attributes(SCHEMA, &desired, &current);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].forces_replacement);
        assert!(restarts(&changes));
        desired.attributes.insert(BASE.into(), json!("/c.ova"));
        let changes = diff_attributes(SCHEMA, &desired, &current);
        assert!(changes
            .iter()
            .any(|c| c.name == BASE && c.forces_replacement));
    }
}
