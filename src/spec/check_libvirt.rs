//! `target = "libvirt"` hosts, `[hosts.NAME.libvirt]` and
//! `[providers.libvirt]`: the raw tables, checks and conversion to a
//! `libvirt` `vm` resource.
//!
//! The URI, the pool and the image and kernel paths may name environment
//! variables, `${VAR}` or `${VAR:-default}`, so one spec serves machines
//! that keep their images in different places (prov's own example and test
//! use this).

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use prov_provider::{Address, Attributes, NameForm, ResourceConfig};
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::error::{Diagnostic, ErrorKind};
use super::expand::{env, expanded, expanded_quiet};
use super::raw::{RawHost, RawSpec, Str};
use crate::providers::Target;
use prov_provider_libvirt::LibvirtSettings;

/// `[providers.libvirt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLibvirt {
    /// Connection URI (default `qemu:///system`).
    pub uri: Option<Str>,
    /// Storage pool of the hosts' volumes (default `default`).
    pub pool: Option<Str>,
    /// Seconds a VM may take from start to SSH (default 300).
    pub boot_timeout: Option<Spanned<i64>>,
    /// Seconds an ACPI shutdown may take before power-off (default 60).
    pub shutdown_timeout: Option<Spanned<i64>>,
}

/// `[hosts.NAME.libvirt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHostLibvirt {
    /// Storage pool (default: the provider's).
    pub pool: Option<Str>,
    /// `kvm` (default) or `qemu`.
    pub domain_type: Option<Str>,
    /// `virtio` (default), `sata` or `scsi`.
    pub disk_bus: Option<Str>,
    /// `bios` (default) or `efi`.
    pub firmware: Option<Str>,
    /// Direct kernel boot: kernel file on the libvirt host.
    pub kernel: Option<Str>,
    /// Direct kernel boot: initrd file.
    pub initrd: Option<Str>,
    /// Direct kernel boot: command line.
    pub cmdline: Option<Str>,
    /// A named libvirt network instead of the user-mode NIC.
    pub network: Option<Str>,
    /// The user-mode NIC's port on 127.0.0.1 (default: a free one).
    pub ssh_port: Option<Spanned<i64>>,
    /// User-mode NIC: no traffic from the guest (inbound SSH still works).
    pub isolated: Option<bool>,
    /// Start with libvirtd.
    pub autostart: Option<bool>,
}

fn seconds(value: Option<&Spanned<i64>>, diags: &mut Vec<Diagnostic>) {
    if let Some(value) = value {
        if let Err(why) = prov_provider_libvirt::timeout(*value.get_ref()) {
            diags.push(Diagnostic::new(ErrorKind::InvalidValue, why, value.span()));
        }
    }
}

/// Checks `[providers.libvirt]`.
pub(crate) fn check_settings(raw: &RawSpec, diags: &mut Vec<Diagnostic>) {
    let Some(settings) = &raw.providers.libvirt else {
        return;
    };
    for value in [&settings.uri, &settings.pool].into_iter().flatten() {
        expanded(value, diags);
    }
    seconds(settings.boot_timeout.as_ref(), diags);
    seconds(settings.shutdown_timeout.as_ref(), diags);
}

/// Checks the libvirt parts of host `name`: `[hosts.NAME.libvirt]` belongs
/// to target `libvirt` only; a libvirt host's values must expand, and the VM
/// it becomes must pass the provider's own rules, each problem shown at the
/// value it comes from.
pub(crate) fn check_host(
    raw: &RawSpec,
    name: &Str,
    host: &RawHost,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) {
    let target = host.target.get_ref().as_str();
    let host_name = name.get_ref();
    if host.target() != Some(Target::Libvirt) {
        if let Some(table) = &host.libvirt {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("[hosts.{host_name}.libvirt] applies to target `libvirt` only; host `{host_name}` has target `{target}`"),
                table.span(),
            ));
        }
        return;
    }
    let table = host.libvirt.as_ref().map(Spanned::get_ref);
    // A value that does not expand is reported as such, not again by the
    // provider's rules (which see it unexpanded).
    let mut unexpanded = BTreeSet::new();
    let expandable = [
        ("base", host.base.as_ref()),
        ("pool", pool(raw, host)),
        ("kernel", table.and_then(|l| l.kernel.as_ref())),
        ("initrd", table.and_then(|l| l.initrd.as_ref())),
        ("cmdline", table.and_then(|l| l.cmdline.as_ref())),
        ("network", table.and_then(|l| l.network.as_ref())),
    ];
    for (attribute, value) in expandable {
        if value.is_some_and(|v| expanded(v, diags).is_none()) {
            unexpanded.insert(attribute);
        }
    }
    let address = Address::host(host_name, None);
    let vm = vm(
        raw,
        raw.deployment.get_ref(),
        address,
        host,
        base_dir,
        BTreeSet::new(),
    );
    super::provider_rules::check(
        name,
        host,
        &vm.attributes,
        &|attribute| span_of(raw, host, attribute),
        &|attribute| unexpanded.contains(attribute),
        diags,
    );
    // One forwarded port cannot serve several machines.
    let port = table.and_then(|l| l.ssh_port.as_ref());
    if let Some(port) = port.filter(|p| (1..=65_535).contains(p.get_ref())) {
        if host.count.as_ref().is_some_and(|c| *c.get_ref() > 1) {
            diags.push(Diagnostic::new(
                ErrorKind::Conflict,
                "a fixed `ssh_port` cannot be shared by several hosts (count > 1)",
                port.span(),
            ));
        }
    }
}

/// The pool a libvirt host's volumes live in, as the spec writes it: the
/// host's own, else `[providers.libvirt]`'s.
fn pool<'a>(raw: &'a RawSpec, host: &'a RawHost) -> Option<&'a Str> {
    let table = host.libvirt.as_ref().map(Spanned::get_ref);
    let provider_pool = raw.providers.libvirt.as_ref().and_then(|l| l.pool.as_ref());
    table.and_then(|l| l.pool.as_ref()).or(provider_pool)
}

/// Where the spec writes the value a libvirt host's VM attribute comes from.
fn span_of(raw: &RawSpec, host: &RawHost, attribute: &str) -> Option<Range<usize>> {
    let table = host.libvirt.as_ref();
    let text = |value: Option<&Str>| value.map(Spanned::span);
    let in_table = |field: fn(&RawHostLibvirt) -> Option<&Str>| {
        table.and_then(|t| field(t.get_ref())).map(Spanned::span)
    };
    match attribute {
        "base" => text(host.base.as_ref()),
        "cpus" => host.cpus.as_ref().map(Spanned::span),
        "memory" => host.memory.as_ref().map(Spanned::span),
        "pool" => text(pool(raw, host)),
        "domain_type" => in_table(|l| l.domain_type.as_ref()),
        "disk_bus" => in_table(|l| l.disk_bus.as_ref()),
        "firmware" => in_table(|l| l.firmware.as_ref()),
        "kernel" => in_table(|l| l.kernel.as_ref()),
        "initrd" => in_table(|l| l.initrd.as_ref()),
        "cmdline" => in_table(|l| l.cmdline.as_ref()),
        "network" => in_table(|l| l.network.as_ref()),
        "ssh_port" => table
            .and_then(|t| t.get_ref().ssh_port.as_ref())
            .map(Spanned::span),
        // Booleans carry no span of their own: the table it is in.
        _ => table.map(Spanned::span),
    }
}

/// `[providers.libvirt]`, expanded.
pub(crate) fn settings(raw: &RawSpec) -> Option<LibvirtSettings> {
    let timeout = |value: &Option<Spanned<i64>>| {
        value
            .as_ref()
            .and_then(|s| prov_provider_libvirt::timeout(*s.get_ref()).ok())
    };
    raw.providers.libvirt.as_ref().map(|l| LibvirtSettings {
        uri: l.uri.as_ref().map_or_else(
            || prov_provider_libvirt::DEFAULT_URI.to_owned(),
            expanded_quiet,
        ),
        boot_timeout: timeout(&l.boot_timeout),
        shutdown_timeout: timeout(&l.shutdown_timeout),
    })
}

/// A path value: expanded, `~/` is the home directory, relative paths are
/// relative to the spec's directory.
fn path_value(value: &Str, base_dir: &Path) -> String {
    let text = expanded_quiet(value);
    let path = match text.strip_prefix("~/") {
        Some(rest) => {
            env("HOME").map_or_else(|| Path::new(&text).to_owned(), |h| Path::new(&h).join(rest))
        }
        None => base_dir.join(&text),
    };
    std::path::absolute(&path)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// The VM of a `libvirt` host, named `prov-DEPLOYMENT-HOST`. A `base` with a
/// `/` is a file (made absolute), else a volume name. The core fills
/// `authorized_keys` with the deployer's public key.
pub(crate) fn vm(
    raw: &RawSpec,
    deployment: &str,
    address: Address,
    host: &RawHost,
    base_dir: &Path,
    depends_on: BTreeSet<Address>,
) -> ResourceConfig {
    let mut attributes = Attributes::new();
    let mut set = |name: &str, value: Value| {
        attributes.insert(name.to_owned(), value);
    };
    set(
        "name",
        NameForm::ProvMachine.render(deployment, &address).into(),
    );
    if let Some(base) = &host.base {
        let text = expanded_quiet(base);
        let value = if text.contains('/') {
            path_value(base, base_dir)
        } else {
            text
        };
        set("base", value.into());
    }
    set(
        "cpus",
        host.cpus.as_ref().map_or(1, |c| *c.get_ref()).into(),
    );
    set(
        "memory",
        host.memory.as_ref().map_or(1024, |m| *m.get_ref()).into(),
    );
    let table = host.libvirt.as_ref().map(Spanned::get_ref);
    let pool = pool(raw, host).map_or_else(
        || prov_provider_libvirt::DEFAULT_POOL.to_owned(),
        expanded_quiet,
    );
    set("pool", pool.into());
    if let Some(l) = table {
        for (name, value) in [
            ("domain_type", &l.domain_type),
            ("disk_bus", &l.disk_bus),
            ("firmware", &l.firmware),
            ("cmdline", &l.cmdline),
            ("network", &l.network),
        ] {
            if let Some(value) = value {
                set(name, expanded_quiet(value).into());
            }
        }
        for (name, value) in [("kernel", &l.kernel), ("initrd", &l.initrd)] {
            if let Some(value) = value {
                set(name, path_value(value, base_dir).into());
            }
        }
        if let Some(port) = &l.ssh_port {
            set("ssh_port", (*port.get_ref()).into());
        }
        if let Some(isolated) = l.isolated {
            set("isolated", isolated.into());
        }
        if let Some(autostart) = l.autostart {
            set("autostart", autostart.into());
        }
    }
    set("authorized_keys", Value::Array(Vec::new()));
    super::convert::virtual_machine(
        address,
        Target::Libvirt,
        prov_provider_libvirt::KIND,
        attributes,
        depends_on,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn libvirt_hosts_become_vms() {
        let spec = crate::spec::parse_toml(
            "deployment = \"d\"\n[providers.libvirt]\nuri = \"${PROV_TEST_UNSET_URI:-qemu:///session}\"\npool = \"p\"\nboot_timeout = 90\n[hosts.web]\ntarget = \"libvirt\"\ncount = 2\nbase = \"img/base.qcow2\"\nmemory = 2048\n[hosts.web.libvirt]\ndomain_type = \"qemu\"\nkernel = \"img/vmlinuz\"\ncmdline = \"root=/dev/vda\"\nisolated = true\n[hosts.db]\ntarget = \"libvirt\"\nbase = \"nixos.qcow2\"\n[hosts.db.libvirt]\npool = \"fast\"\nnetwork = \"lab\"\n",
            Path::new("/s/spec.toml"),
        )
        .unwrap();
        let settings = spec.providers.libvirt.clone().unwrap();
        assert_eq!(settings.uri, "qemu:///session");
        assert_eq!(settings.boot_timeout, Some(Duration::from_secs(90)));
        let web = spec
            .resources
            .iter()
            .find(|r| r.address.to_string() == "web[1]")
            .unwrap();
        assert_eq!(web.provider, "libvirt");
        assert_eq!(web.attributes["name"], "prov-d-web-1");
        assert_eq!(web.attributes["base"], "/s/img/base.qcow2");
        assert_eq!(web.attributes["kernel"], "/s/img/vmlinuz");
        assert_eq!(web.attributes["pool"], "p");
        assert_eq!(web.attributes["memory"], 2048);
        assert_eq!(web.attributes["isolated"], true);
        let db = spec
            .resources
            .iter()
            .find(|r| r.address.to_string() == "db")
            .unwrap();
        assert_eq!(db.attributes["base"], "nixos.qcow2");
        assert_eq!(db.attributes["pool"], "fast");
        assert_eq!(db.attributes["network"], "lab");
    }

    /// The VM rules are the provider's (one set, `check_vm`); the spec shows
    /// each problem at the value it comes from.
    #[test]
    fn provider_rules_are_located_at_their_values() {
        let head = "deployment = \"d\"\n[hosts.web]\ntarget = \"libvirt\"\nbase = \"b.qcow2\"\n";
        let cases = [
            ("cpus = 0\n", "`cpus` must be from 1 to 256 (got 0)", (5, 8)),
            (
                "[hosts.web.libvirt]\ndomain_type = \"xen\"\n",
                "`domain_type` must be one of kvm, qemu, not `xen`",
                (6, 15),
            ),
            (
                "[hosts.web.libvirt]\nkernel = \"/k\"\nfirmware = \"efi\"\n",
                "`firmware` does not apply with `kernel`",
                (7, 12),
            ),
            (
                "[hosts.web.libvirt]\nnetwork = \"lab\"\nisolated = false\n",
                "`isolated` applies to the user-mode NIC only",
                (6, 11),
            ),
            (
                "[hosts.web.libvirt]\ncmdline = \"a\\nb\"\nkernel = \"/k\"\n",
                "`cmdline` must be a non-empty single-line string",
                (6, 11),
            ),
        ];
        for (extra, message, at) in cases {
            let source = format!("{head}{extra}");
            let err = crate::spec::parse_toml(&source, Path::new("/s/spec.toml")).unwrap_err();
            let [problem] = err.diagnostics() else {
                panic!("{source}: one problem expected\n{err}");
            };
            assert!(problem.message.contains(message), "{source}\n{err}");
            assert_eq!((problem.line, problem.col), at, "{source}\n{err}");
        }
    }
}
