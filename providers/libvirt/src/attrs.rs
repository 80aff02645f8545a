//! The attributes of a libvirt VM: schema, parsing and normalisation.

use std::ops::RangeInclusive;

#[cfg(feature = "client")]
use prov_provider::{is_unset, keep_current, set_default, Address, AttributeChange, ProviderError};
use prov_provider::{AttributeProblem, AttributeReader, AttributeSchema, Attributes};

use crate::choices::{Choice, DiskBus, DomainType, Firmware};
#[cfg(feature = "client")]
use crate::error::config_error;
#[cfg(feature = "client")]
use crate::KIND;

/// The domain's name (`prov-DEPLOYMENT-HOST`); also the provider id.
pub(crate) const NAME: &str = "name";
/// The base image: a volume name in the pool, or a local file (a path with
/// a `/`) that prov uploads into the pool once.
pub(crate) const BASE: &str = "base";
/// The storage pool holding the base image, the overlay and the seed.
pub(crate) const POOL: &str = "pool";
/// Virtual CPUs.
pub(crate) const CPUS: &str = "cpus";
/// Memory in MiB.
pub(crate) const MEMORY: &str = "memory";
/// `kvm` or `qemu` (software emulation, TCG).
pub(crate) const DOMAIN_TYPE: &str = "domain_type";
/// `virtio`, `sata` or `scsi`: the bus of the system disk.
pub(crate) const DISK_BUS: &str = "disk_bus";
/// `bios` or `efi` (ignored with direct kernel boot).
pub(crate) const FIRMWARE: &str = "firmware";
/// Direct kernel boot: the kernel file on the libvirt host.
pub(crate) const KERNEL: &str = "kernel";
/// Direct kernel boot: the initrd file on the libvirt host.
pub(crate) const INITRD: &str = "initrd";
/// Direct kernel boot: the kernel command line.
pub(crate) const CMDLINE: &str = "cmdline";
/// A named libvirt network; unset means a user-mode NIC with an SSH port
/// forward on 127.0.0.1 (needs no bridge and no DHCP lease).
pub(crate) const NETWORK: &str = "network";
/// The user-mode NIC's forwarded port on 127.0.0.1 (allocated when unset).
pub(crate) const SSH_PORT: &str = "ssh_port";
/// User-mode NIC only: cut all traffic from the guest (inbound SSH works).
pub(crate) const ISOLATED: &str = "isolated";
/// Start the domain when libvirtd starts.
pub(crate) const AUTOSTART: &str = "autostart";
/// Whether the domain runs: always desired, so a VM stopped outside prov
/// shows as drift and the next apply starts it.
pub(crate) const RUNNING: &str = "running";
/// OpenSSH public key lines that may log in as root (given in the seed).
pub(crate) const AUTHORIZED_KEYS: &str = "authorized_keys";
/// Where to connect: 127.0.0.1 for the user-mode NIC, else the leased address.
pub(crate) const SSH_HOST: &str = "ssh_host";
/// The public host key prov generated, `ssh-ed25519 AAAA…`.
pub(crate) const HOST_KEY: &str = "host_key";
/// `running` or `shut off`.
pub(crate) const STATE: &str = "state";
/// The domain's UUID.
pub(crate) const UUID: &str = "uuid";
/// The serial console's log file on the libvirt host.
pub(crate) const CONSOLE_LOG: &str = "console_log";

/// Attributes changed by redefining the domain with it shut down.
#[cfg(feature = "client")]
pub(crate) const RESTARTING: &[&str] = &[
    CPUS,
    MEMORY,
    DOMAIN_TYPE,
    FIRMWARE,
    KERNEL,
    INITRD,
    CMDLINE,
    NETWORK,
    SSH_PORT,
    ISOLATED,
    // A new seed; cloud-init adds the keys at the next boot.
    AUTHORIZED_KEYS,
];

/// The attributes of kind `vm`.
pub(crate) const SCHEMA: &[AttributeSchema] = &[
    AttributeSchema::force_new(NAME),
    AttributeSchema::force_new(BASE),
    AttributeSchema::force_new(POOL),
    AttributeSchema::force_new(DISK_BUS),
    AttributeSchema::in_place(AUTHORIZED_KEYS),
    AttributeSchema::in_place(CPUS),
    AttributeSchema::in_place(MEMORY),
    AttributeSchema::in_place(DOMAIN_TYPE),
    AttributeSchema::in_place(FIRMWARE),
    AttributeSchema::in_place(KERNEL),
    AttributeSchema::in_place(INITRD),
    AttributeSchema::in_place(CMDLINE),
    AttributeSchema::in_place(NETWORK),
    AttributeSchema::in_place(SSH_PORT),
    AttributeSchema::in_place(ISOLATED),
    AttributeSchema::in_place(AUTOSTART),
    AttributeSchema::in_place(RUNNING),
    AttributeSchema::computed(SSH_HOST),
    AttributeSchema::computed(HOST_KEY),
    AttributeSchema::computed(STATE),
    AttributeSchema::computed(UUID),
    AttributeSchema::computed(CONSOLE_LOG),
];

/// Defaults of attributes the spec may leave out, as `read` reports them.
pub(crate) const DEFAULT_CPUS: u64 = 1;
/// Default memory in MiB.
pub(crate) const DEFAULT_MEMORY: u64 = 1024;
/// The storage pool of a VM that names none.
pub const DEFAULT_POOL: &str = "default";

/// The accepted numbers of virtual CPUs.
const CPU_RANGE: RangeInclusive<u64> = 1..=256;
/// The accepted memory sizes, in MiB.
const MEMORY_RANGE: RangeInclusive<u64> = 16..=16_777_216;
/// The accepted forwarded ports.
const PORT_RANGE: RangeInclusive<u64> = 1..=65_535;

/// What `base` names, for a spec that leaves it out.
const BASE_HELP: &str = "a volume of the pool (base = \"nixos.qcow2\") or an image file to upload (base = \"/var/lib/images/nixos.qcow2\")";

/// How a VM boots.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Boot {
    /// From its disk, through its firmware.
    Firmware(Firmware),
    /// Straight into a kernel on the libvirt host.
    Kernel {
        kernel: String,
        initrd: Option<String>,
        cmdline: Option<String>,
    },
}

/// How a VM is networked.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Nic {
    /// QEMU user-mode networking with `127.0.0.1:port` forwarded to the
    /// guest's port 22.
    User { port: Option<u16>, isolated: bool },
    /// A named libvirt network; the address comes from its DHCP leases.
    Network(String),
}

/// What a create or update asks for, checked.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VmSpec {
    pub name: String,
    pub base: String,
    pub pool: String,
    pub cpus: u64,
    pub memory: u64,
    pub domain_type: DomainType,
    pub disk_bus: DiskBus,
    pub boot: Boot,
    pub nic: Nic,
    pub autostart: bool,
    pub authorized_keys: Vec<String>,
}

/// The value of choice attribute `name`: its default when unset.
fn choice<C: Choice>(reader: &mut AttributeReader<'_>, name: &'static str) -> C {
    let Some(value) = reader.optional_string(name) else {
        return C::default();
    };
    C::from_name(&value).unwrap_or_else(|| {
        reader.invalid(
            name,
            format!("`{name}` must be one of {}, not `{value}`", C::names()),
        );
        C::default()
    })
}

/// Direct kernel boot, or firmware; the boot attributes of the other way
/// are conflicts.
fn boot(reader: &mut AttributeReader<'_>) -> Boot {
    let Some(kernel) = reader.optional_string(KERNEL) else {
        for only in [INITRD, CMDLINE] {
            if reader.is_set(only) {
                reader.conflict(
                    only,
                    format!("`{only}` needs `kernel` (direct kernel boot)"),
                );
            }
        }
        return Boot::Firmware(choice(reader, FIRMWARE));
    };
    if reader.is_set(FIRMWARE) {
        reader.conflict(
            FIRMWARE,
            "`firmware` does not apply with `kernel` (direct kernel boot)".to_owned(),
        );
    }
    Boot::Kernel {
        kernel,
        initrd: reader.optional_string(INITRD),
        cmdline: reader.optional_string(CMDLINE),
    }
}

/// A named network, or the user-mode NIC; the user-mode NIC's attributes
/// with a network are conflicts.
fn nic(reader: &mut AttributeReader<'_>) -> Nic {
    let Some(network) = reader.optional_string(NETWORK) else {
        return Nic::User {
            port: reader
                .number(SSH_PORT, PORT_RANGE)
                .and_then(|p| u16::try_from(p).ok()),
            isolated: reader.boolean(ISOLATED),
        };
    };
    // `isolated` is shown at `network`: the table names the network.
    for (only, at) in [(SSH_PORT, SSH_PORT), (ISOLATED, NETWORK)] {
        if reader.is_set(only) {
            reader.conflict(
                at,
                format!("`{only}` applies to the user-mode NIC only, not with `network`"),
            );
        }
    }
    Nic::Network(network)
}

/// The VM the attributes of a create or update describe, or every problem
/// with them (the rules are written once, here: the spec check shows the
/// problems at their source, `create` and `update` refuse with the first).
fn read_vm(attributes: &Attributes) -> Result<VmSpec, Vec<AttributeProblem>> {
    let mut reader = AttributeReader::new(attributes);
    let name = reader.required_string(NAME, "the domain's name, `prov-DEPLOYMENT-HOST`");
    let usable = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(usable) {
        reader.invalid(
            NAME,
            format!("`{name}` is not usable as a domain name (letters, digits, `-`, `_`, `.`)"),
        );
    }
    let vm = VmSpec {
        name,
        base: reader.required_string(BASE, BASE_HELP),
        pool: reader
            .optional_string(POOL)
            .unwrap_or_else(|| DEFAULT_POOL.into()),
        cpus: reader.number(CPUS, CPU_RANGE).unwrap_or(DEFAULT_CPUS),
        memory: reader
            .number(MEMORY, MEMORY_RANGE)
            .unwrap_or(DEFAULT_MEMORY),
        domain_type: choice(&mut reader, DOMAIN_TYPE),
        disk_bus: choice(&mut reader, DISK_BUS),
        boot: boot(&mut reader),
        nic: nic(&mut reader),
        autostart: reader.boolean(AUTOSTART),
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
#[cfg(feature = "client")]
pub(crate) fn parse_spec(
    resource: &Address,
    attributes: &Attributes,
) -> Result<VmSpec, ProviderError> {
    read_vm(attributes)
        .map_err(|problems| config_error(AttributeProblem::refusal(KIND, resource, &problems)))
}

/// Brings desired attributes into the form `read` reports: defaults filled
/// in, an unset `ssh_port` keeps the allocated one, key lines trimmed.
#[cfg(feature = "client")]
pub(crate) fn normalize_desired(desired: &mut Attributes, current: &Attributes) {
    set_default(desired, CPUS, DEFAULT_CPUS.into());
    set_default(desired, MEMORY, DEFAULT_MEMORY.into());
    set_default(desired, POOL, DEFAULT_POOL.into());
    set_default(desired, DOMAIN_TYPE, DomainType::default().name().into());
    set_default(desired, DISK_BUS, DiskBus::default().name().into());
    set_default(desired, AUTOSTART, false.into());
    desired.insert(RUNNING.to_owned(), true.into());
    let direct = !is_unset(desired, KERNEL);
    let user_nic = is_unset(desired, NETWORK);
    if direct {
        desired.remove(FIRMWARE);
    } else {
        set_default(desired, FIRMWARE, Firmware::default().name().into());
    }
    if user_nic {
        set_default(desired, ISOLATED, false.into());
        // A null port kept here is dropped below with every other null.
        keep_current(desired, current, &[SSH_PORT]);
    }
    prov_provider::normalize_authorized_keys(desired);
    // Null means "not set": drop it, as `read` does not report unset ones.
    desired.retain(|_, v| !v.is_null());
}

/// Whether an update can change attribute `name` (else it forces a new VM).
#[cfg(feature = "client")]
pub(crate) fn changes_in_place(name: &str) -> bool {
    SCHEMA
        .iter()
        .any(|a| a.name == name && a.mode == prov_provider::UpdateMode::InPlace)
}

/// Whether applying `changes` restarts the VM.
#[cfg(feature = "client")]
pub(crate) fn restarts(changes: &[AttributeChange]) -> bool {
    changes
        .iter()
        .any(|c| !c.forces_replacement && RESTARTING.contains(&c.name.as_str()))
}

#[cfg(all(test, feature = "client"))]
mod tests {
    use super::*;
    use prov_provider::{diff_attributes, Desired};
    use serde_json::{json, Value};

    fn attrs(v: Value) -> Attributes {
        serde_json::from_value(v).unwrap()
    }

    /// What `read` reports for a VM made from the spec below.
    fn current() -> Attributes {
        attrs(json!({
            "name": "prov-d-web-0", "base": "/i/base.qcow2", "pool": "default", "cpus": 1,
            "memory": 1024, "domain_type": "kvm", "disk_bus": "virtio", "firmware": "bios",
            "ssh_port": 40001, "isolated": false, "autostart": false, "running": true,
            "authorized_keys": ["k"], "ssh_host": "127.0.0.1", "host_key": "ssh-ed25519 AAAA",
            "state": "running", "uuid": "u", "console_log": "/var/log/x",
        }))
    }

    fn diff(spec: Value) -> Vec<AttributeChange> {
        let current = current();
        let mut desired = Desired {
            attributes: attrs(spec),
            unknown: Default::default(),
        };
        normalize_desired(&mut desired.attributes, &current);
        diff_attributes(SCHEMA, &desired, &current)
    }

    #[test]
    fn defaults_and_the_allocated_port_plan_nothing() {
        let changes = diff(json!({
            "name": "prov-d-web-0", "base": "/i/base.qcow2", "authorized_keys": [" k "],
        }));
        assert_eq!(changes, []);
    }

    #[test]
    fn memory_and_cpus_restart_in_place_base_and_bus_replace() {
        let base =
            json!({"name": "prov-d-web-0", "base": "/i/base.qcow2", "authorized_keys": ["k"]});
        let with = |key: &str, value: Value| {
            let mut spec = base.clone();
            spec[key] = value;
            diff(spec)
        };
        for (key, value) in [("memory", json!(2048)), ("cpus", json!(2))] {
            let changes = with(key, value);
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert!(!changes[0].forces_replacement, "{key}");
            assert!(restarts(&changes), "{key}");
        }
        for (key, value) in [
            ("base", json!("/i/other.qcow2")),
            ("disk_bus", json!("sata")),
            ("pool", json!("fast")),
        ] {
            let changes = with(key, value);
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert!(changes[0].forces_replacement, "{key}");
        }
        let autostart = with("autostart", json!(true));
        assert!(!autostart[0].forces_replacement && !restarts(&autostart));
    }

    /// A teammate or CI with another deployer key must not recreate VMs: the
    /// new keys reach the VM in place, through a new seed at a restart.
    #[test]
    fn another_deployer_key_restarts_in_place_and_never_replaces() {
        let changes = diff(json!({
            "name": "prov-d-web-0", "base": "/i/base.qcow2", "authorized_keys": ["k2"],
        }));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].name, AUTHORIZED_KEYS);
        assert!(!changes[0].forces_replacement, "{changes:?}");
        assert!(restarts(&changes));
    }

    #[test]
    fn rejects_what_cannot_be_a_vm() {
        let web = Address::host("web", Some(0));
        for bad in [
            json!({"name": "prov-d-web-0"}),
            json!({"name": "a b", "base": "x"}),
            json!({"name": "n", "base": "x", "cpus": 0}),
            json!({"name": "n", "base": "x", "domain_type": "xen"}),
            json!({"name": "n", "base": "x", "disk_bus": "ide"}),
            json!({"name": "n", "base": "x", "initrd": "/i"}),
            json!({"name": "n", "base": "x", "network": "lab", "ssh_port": 22}),
            json!({"name": "n", "base": "x", "authorized_keys": "k"}),
        ] {
            assert!(parse_spec(&web, &attrs(bad.clone())).is_err(), "{bad}");
        }
        let spec = parse_spec(
            &web,
            &attrs(json!({"name": "n", "base": "x", "kernel": "/k", "cmdline": "ro"})),
        )
        .unwrap();
        assert!(matches!(spec.boot, Boot::Kernel { .. }));
        assert_eq!(
            spec.nic,
            Nic::User {
                port: None,
                isolated: false
            }
        );
    }
}
