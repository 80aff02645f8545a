//! The attributes of a libvirt VM: schema, parsing and normalisation.

use prov_provider::{Address, AttributeChange, AttributeSchema, Attributes, ProviderError};
use serde_json::Value;

use crate::error::config_error;

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
/// Default pool.
pub(crate) const DEFAULT_POOL: &str = "default";
/// Default domain type.
pub(crate) const DEFAULT_DOMAIN_TYPE: &str = "kvm";
/// Default disk bus.
pub(crate) const DEFAULT_DISK_BUS: &str = "virtio";
/// Default firmware.
pub(crate) const DEFAULT_FIRMWARE: &str = "bios";

/// The accepted domain types.
pub(crate) const DOMAIN_TYPES: &[&str] = &["kvm", "qemu"];
/// The accepted disk buses.
pub(crate) const DISK_BUSES: &[&str] = &["virtio", "sata", "scsi"];
/// The accepted firmwares.
pub(crate) const FIRMWARES: &[&str] = &["bios", "efi"];

/// How a VM boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Boot {
    /// From its disk, through `bios` or `efi` firmware.
    Firmware(String),
    /// Straight into a kernel on the libvirt host.
    Kernel {
        kernel: String,
        initrd: Option<String>,
        cmdline: Option<String>,
    },
}

/// How a VM is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Nic {
    /// QEMU user-mode networking with `127.0.0.1:port` forwarded to the
    /// guest's port 22.
    User { port: Option<u16>, isolated: bool },
    /// A named libvirt network; the address comes from its DHCP leases.
    Network(String),
}

/// What a create or update asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VmSpec {
    pub name: String,
    pub base: String,
    pub pool: String,
    pub cpus: u64,
    pub memory: u64,
    pub domain_type: String,
    pub disk_bus: String,
    pub boot: Boot,
    pub nic: Nic,
    pub autostart: bool,
    pub authorized_keys: Vec<String>,
}

fn is_unset(attributes: &Attributes, name: &str) -> bool {
    attributes.get(name).is_none_or(Value::is_null)
}

fn optional_string(
    resource: &Address,
    attributes: &Attributes,
    name: &str,
) -> Result<Option<String>, ProviderError> {
    match attributes.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && !s.contains(['\n', '\r', '\0']) => {
            Ok(Some(s.clone()))
        }
        Some(other) => Err(config_error(format!(
            "vm `{resource}`: `{name}` must be a non-empty single-line string, not {other}"
        ))),
    }
}

fn string(
    resource: &Address,
    attributes: &Attributes,
    name: &str,
) -> Result<String, ProviderError> {
    optional_string(resource, attributes, name)?
        .ok_or_else(|| config_error(format!("vm `{resource}`: `{name}` is required")))
}

fn choice(
    resource: &Address,
    attributes: &Attributes,
    name: &str,
    allowed: &[&str],
    default: &str,
) -> Result<String, ProviderError> {
    let value = optional_string(resource, attributes, name)?.unwrap_or_else(|| default.to_owned());
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(config_error(format!(
            "vm `{resource}`: `{name}` must be one of {}, not `{value}`",
            allowed.join(", ")
        )))
    }
}

fn number(
    resource: &Address,
    attributes: &Attributes,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ProviderError> {
    prov_provider::bounded_integer(attributes, name, range)
        .map_err(|why| config_error(format!("vm `{resource}`: {why}")))
}

fn boolean(resource: &Address, attributes: &Attributes, name: &str) -> Result<bool, ProviderError> {
    match attributes.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(config_error(format!(
            "vm `{resource}`: `{name}` must be true or false, not {other}"
        ))),
    }
}

/// Checks the attributes of a create or update.
pub(crate) fn parse_spec(
    resource: &Address,
    attributes: &Attributes,
) -> Result<VmSpec, ProviderError> {
    let name = string(resource, attributes, NAME)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(config_error(format!(
            "vm `{resource}`: `{name}` is not usable as a domain name (letters, digits, `-`, `_`, `.`)"
        )));
    }
    let pool = optional_string(resource, attributes, POOL)?.unwrap_or_else(|| DEFAULT_POOL.into());
    let boot = match optional_string(resource, attributes, KERNEL)? {
        Some(kernel) => Boot::Kernel {
            kernel,
            initrd: optional_string(resource, attributes, INITRD)?,
            cmdline: optional_string(resource, attributes, CMDLINE)?,
        },
        None => {
            for only in [INITRD, CMDLINE] {
                if !is_unset(attributes, only) {
                    return Err(config_error(format!(
                        "vm `{resource}`: `{only}` needs `kernel` (direct kernel boot)"
                    )));
                }
            }
            Boot::Firmware(choice(
                resource,
                attributes,
                FIRMWARE,
                FIRMWARES,
                DEFAULT_FIRMWARE,
            )?)
        }
    };
    let nic = match optional_string(resource, attributes, NETWORK)? {
        Some(network) => {
            for only in [SSH_PORT, ISOLATED] {
                if !is_unset(attributes, only) {
                    return Err(config_error(format!(
                        "vm `{resource}`: `{only}` applies to the user-mode NIC only, not with `network`"
                    )));
                }
            }
            Nic::Network(network)
        }
        None => Nic::User {
            port: number(resource, attributes, SSH_PORT, 1..=65535)?
                .and_then(|p| u16::try_from(p).ok()),
            isolated: boolean(resource, attributes, ISOLATED)?,
        },
    };
    Ok(VmSpec {
        name,
        base: string(resource, attributes, BASE)?,
        pool,
        cpus: number(resource, attributes, CPUS, 1..=256)?.unwrap_or(DEFAULT_CPUS),
        memory: number(resource, attributes, MEMORY, 16..=16_777_216)?.unwrap_or(DEFAULT_MEMORY),
        domain_type: choice(
            resource,
            attributes,
            DOMAIN_TYPE,
            DOMAIN_TYPES,
            DEFAULT_DOMAIN_TYPE,
        )?,
        disk_bus: choice(resource, attributes, DISK_BUS, DISK_BUSES, DEFAULT_DISK_BUS)?,
        boot,
        nic,
        autostart: boolean(resource, attributes, AUTOSTART)?,
        authorized_keys: prov_provider::authorized_keys(attributes)
            .map_err(|why| config_error(format!("vm `{resource}`: `authorized_keys` {why}")))?,
    })
}

/// Brings desired attributes into the form `read` reports: defaults filled
/// in, an unset `ssh_port` keeps the allocated one, key lines trimmed.
pub(crate) fn normalize_desired(desired: &mut Attributes, current: &Attributes) {
    let mut default = |name: &str, value: Value| {
        if is_unset(desired, name) {
            desired.insert(name.to_owned(), value);
        }
    };
    default(CPUS, DEFAULT_CPUS.into());
    default(MEMORY, DEFAULT_MEMORY.into());
    default(POOL, DEFAULT_POOL.into());
    default(DOMAIN_TYPE, DEFAULT_DOMAIN_TYPE.into());
    default(DISK_BUS, DEFAULT_DISK_BUS.into());
    default(AUTOSTART, false.into());
    desired.insert(RUNNING.to_owned(), true.into());
    let direct = !is_unset(desired, KERNEL);
    let user_nic = is_unset(desired, NETWORK);
    if direct {
        desired.remove(FIRMWARE);
    } else if is_unset(desired, FIRMWARE) {
        desired.insert(FIRMWARE.to_owned(), DEFAULT_FIRMWARE.into());
    }
    if user_nic {
        if is_unset(desired, ISOLATED) {
            desired.insert(ISOLATED.to_owned(), false.into());
        }
        if is_unset(desired, SSH_PORT) {
            if let Some(port) = current.get(SSH_PORT).filter(|v| !v.is_null()) {
                desired.insert(SSH_PORT.to_owned(), port.clone());
            }
        }
    }
    prov_provider::normalize_authorized_keys(desired);
    // Null means "not set": drop it, as `read` does not report unset ones.
    desired.retain(|_, v| !v.is_null());
}

/// Whether an update can change attribute `name` (else it forces a new VM).
pub(crate) fn changes_in_place(name: &str) -> bool {
    SCHEMA
        .iter()
        .any(|a| a.name == name && a.mode == prov_provider::UpdateMode::InPlace)
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
    use serde_json::json;

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
