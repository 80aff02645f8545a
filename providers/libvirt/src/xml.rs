//! Domain and volume XML: what prov defines, and reading a domain's XML back
//! into attributes.
//!
//! prov's own bookkeeping lives in the domain's `<metadata>` under its own
//! namespace ([`META_NS`]): the idempotency token of the create, the base as
//! the spec wrote it, the public host key, and whether the create finished.

use crate::attrs::{Boot, Nic, VmSpec};
use crate::choices::{Choice, DiskBus, DomainType, Firmware};

/// The namespace of prov's element in a domain's `<metadata>`.
pub(crate) const META_NS: &str = "https://prov.invalid/xmlns/libvirt/1";
/// The namespace of libvirt's QEMU command-line passthrough.
const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";
/// The guest's user-mode network (documentation range, off 10.0.2.x).
const USER_NET: &str = "192.0.2.0/24";

/// Escapes text for an XML attribute value or element content.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// prov's bookkeeping on a domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Meta {
    /// The idempotency token of the create that made the domain.
    pub token: String,
    /// The base as the spec wrote it.
    pub base: String,
    /// The public host key handed to the guest.
    pub host_key: String,
    /// The keys that may log in as root, as the seed gave them.
    pub authorized_keys: Vec<String>,
    /// Set once the create finished (the guest answered on SSH).
    pub ready: bool,
}

impl Meta {
    /// The `<prov:vm>` element inside a domain's `<metadata>`.
    pub(crate) fn element(&self) -> String {
        self.render(&format!("prov:vm xmlns:prov='{META_NS}'"), "prov:")
    }

    /// The element for `virDomainSetMetadata`, which puts the top element
    /// in prov's namespace itself (its children stay unqualified).
    pub(crate) fn bare_element(&self) -> String {
        self.render("vm", "")
    }

    fn render(&self, open: &str, prefix: &str) -> String {
        let field =
            |name: &str, value: &str| format!("<{prefix}{name}>{}</{prefix}{name}>", escape(value));
        let keys: String = self
            .authorized_keys
            .iter()
            .map(|k| field("authorized-key", k))
            .collect();
        format!(
            "<{open}>{}{}{}{keys}{}</{prefix}vm>",
            field("token", &self.token),
            field("base", &self.base),
            field("host-key", &self.host_key),
            field("ready", if self.ready { "true" } else { "false" }),
        )
    }
}

/// The volumes and files a domain is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The overlay volume (the system disk).
    pub overlay: String,
    /// The NoCloud seed volume.
    pub seed: String,
    /// The serial console's log file.
    pub console_log: String,
}

/// The device names of the system disk and the seed on `bus`.
fn device_names(bus: DiskBus) -> (&'static str, &'static str) {
    if bus == DiskBus::Virtio {
        ("vda", "vdb")
    } else {
        ("sda", "sdb")
    }
}

/// The domain XML of `spec`, forwarding `port` to the guest's SSH for a
/// user-mode NIC; `uuid` when it redefines an existing domain.
pub(crate) fn domain(
    spec: &VmSpec,
    layout: &Layout,
    meta: &Meta,
    port: Option<u16>,
    uuid: Option<&str>,
) -> String {
    let mut x = String::new();
    let user_nic = matches!(spec.nic, Nic::User { .. });
    x.push_str(&format!("<domain type='{}'", spec.domain_type.name()));
    if user_nic {
        x.push_str(&format!(" xmlns:qemu='{QEMU_NS}'"));
    }
    x.push_str(">\n");
    x.push_str(&format!("  <name>{}</name>\n", escape(&spec.name)));
    if let Some(uuid) = uuid {
        x.push_str(&format!("  <uuid>{}</uuid>\n", escape(uuid)));
    }
    x.push_str(&format!("  <metadata>{}</metadata>\n", meta.element()));
    x.push_str(&format!("  <memory unit='MiB'>{}</memory>\n", spec.memory));
    x.push_str(&format!("  <vcpu>{}</vcpu>\n", spec.cpus));
    match &spec.boot {
        Boot::Firmware(firmware) => {
            if *firmware == Firmware::Efi {
                x.push_str("  <os firmware='efi'>\n");
            } else {
                x.push_str("  <os>\n");
            }
            x.push_str("    <type arch='x86_64' machine='pc'>hvm</type>\n");
            x.push_str("    <boot dev='hd'/>\n");
        }
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            x.push_str("  <os>\n");
            x.push_str("    <type arch='x86_64' machine='pc'>hvm</type>\n");
            x.push_str(&format!("    <kernel>{}</kernel>\n", escape(kernel)));
            if let Some(initrd) = initrd {
                x.push_str(&format!("    <initrd>{}</initrd>\n", escape(initrd)));
            }
            if let Some(cmdline) = cmdline {
                x.push_str(&format!("    <cmdline>{}</cmdline>\n", escape(cmdline)));
            }
        }
    }
    x.push_str("  </os>\n");
    x.push_str("  <features><acpi/><apic/></features>\n");
    if spec.domain_type == DomainType::Kvm {
        x.push_str("  <cpu mode='host-passthrough' check='none'/>\n");
    } else {
        x.push_str("  <cpu mode='maximum' check='none'/>\n");
    }
    x.push_str("  <clock offset='utc'/>\n");
    x.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n");
    x.push_str("  <devices>\n");
    let bus = spec.disk_bus.name();
    let pool = escape(&spec.pool);
    let (system, seed) = device_names(spec.disk_bus);
    if spec.disk_bus == DiskBus::Scsi {
        x.push_str("    <controller type='scsi' index='0' model='virtio-scsi'/>\n");
    }
    x.push_str(&format!(
        "    <disk type='volume' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source pool='{pool}' volume='{}'/>\n      <target dev='{system}' bus='{bus}'/>\n    </disk>\n",
        escape(&layout.overlay)
    ));
    // The seed: a read-only virtio disk (the smallest guest kernels have no
    // CD-ROM driver), or a CD-ROM on the other buses (read-only hard disks
    // are refused there).
    let seed_device = if spec.disk_bus == DiskBus::Virtio {
        "disk"
    } else {
        "cdrom"
    };
    x.push_str(&format!(
        "    <disk type='volume' device='{seed_device}'>\n      <driver name='qemu' type='raw'/>\n      <source pool='{pool}' volume='{}'/>\n      <target dev='{seed}' bus='{bus}'/>\n      <readonly/>\n    </disk>\n",
        escape(&layout.seed)
    ));
    if let Nic::Network(network) = &spec.nic {
        x.push_str(&format!(
            "    <interface type='network'>\n      <source network='{}'/>\n      <model type='virtio'/>\n    </interface>\n",
            escape(network)
        ));
    }
    x.push_str(&format!(
        "    <serial type='pty'>\n      <log file='{}' append='off'/>\n      <target port='0'/>\n    </serial>\n    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n",
        escape(&layout.console_log)
    ));
    x.push_str("  </devices>\n");
    if let (Nic::User { isolated, .. }, Some(port)) = (&spec.nic, port) {
        // libvirt 9 has no user-mode port forwards without passt; QEMU's own
        // slirp does it. The PCI address is pinned so it never clashes with
        // the devices libvirt places.
        let restrict = if *isolated { ",restrict=on" } else { "" };
        x.push_str("  <qemu:commandline>\n");
        for arg in [
            "-netdev".to_owned(),
            format!("user,id=prov0,net={USER_NET}{restrict},hostfwd=tcp:127.0.0.1:{port}-:22"),
            "-device".to_owned(),
            "virtio-net-pci,netdev=prov0,bus=pci.0,addr=0x10".to_owned(),
        ] {
            x.push_str(&format!("    <qemu:arg value='{}'/>\n", escape(&arg)));
        }
        x.push_str("  </qemu:commandline>\n");
    }
    x.push_str("</domain>\n");
    x
}

/// The XML of a new volume `name` of `capacity` bytes in `format`, on top of
/// `backing` (path and format) when given.
pub(crate) fn volume(
    name: &str,
    capacity: u64,
    format: &str,
    backing: Option<(&str, &str)>,
) -> String {
    let mut x = format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{capacity}</capacity>\n  <target>\n    <format type='{}'/>\n    <permissions><mode>0600</mode></permissions>\n  </target>\n",
        escape(name),
        escape(format)
    );
    if let Some((path, backing_format)) = backing {
        x.push_str(&format!(
            "  <backingStore>\n    <path>{}</path>\n    <format type='{}'/>\n  </backingStore>\n",
            escape(path),
            escape(backing_format)
        ));
    }
    x.push_str("</volume>\n");
    x
}

/// What a domain's XML says, in prov's terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DomainInfo {
    pub name: String,
    pub uuid: String,
    pub domain_type: String,
    pub memory_mib: Option<u64>,
    pub cpus: Option<u64>,
    pub firmware: Option<String>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    /// Bus and pool of the system disk.
    pub disk_bus: Option<String>,
    pub pool: Option<String>,
    /// Volumes of all disks (pool, volume).
    pub volumes: Vec<(String, String)>,
    pub network: Option<String>,
    /// The forwarded port of a user-mode NIC, and whether it is restricted.
    pub ssh_port: Option<u16>,
    pub isolated: bool,
    pub console_log: Option<String>,
    pub meta: Option<Meta>,
}

/// Memory in MiB from a `<memory>` element's value and unit.
fn mebibytes(value: u64, unit: Option<&str>) -> Option<u64> {
    let bytes_per_unit: u64 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "k" | "KiB" => 1 << 10,
        "KB" => 1000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    value.checked_mul(bytes_per_unit).map(|b| b >> 20)
}

/// The port and restriction of a `-netdev user,…,hostfwd=tcp:127.0.0.1:PORT-:22`.
fn user_forward(arg: &str) -> Option<(u16, bool)> {
    let options = arg.strip_prefix("user,")?;
    let mut port = None;
    let mut restricted = false;
    for option in options.split(',') {
        if let Some(rule) = option.strip_prefix("hostfwd=tcp:") {
            let (host, guest) = rule.split_once('-')?;
            if guest.trim_start_matches(':') != "22" {
                continue;
            }
            port = host.rsplit(':').next()?.parse().ok();
        } else if option == "restrict=on" || option == "restrict=yes" {
            restricted = true;
        }
    }
    port.map(|p| (p, restricted))
}

fn text(node: roxmltree::Node<'_, '_>) -> Option<String> {
    node.text()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children().find(|n| n.has_tag_name(name))
}

fn parse_meta(metadata: roxmltree::Node<'_, '_>) -> Option<Meta> {
    let vm = metadata
        .children()
        .find(|n| n.has_tag_name((META_NS, "vm")))?;
    // Children are qualified when prov defined the domain, unqualified
    // after virDomainSetMetadata: match them by local name.
    let named = |name: &'static str| {
        move |n: &roxmltree::Node<'_, '_>| n.is_element() && n.tag_name().name() == name
    };
    let field = |name: &'static str| {
        vm.children()
            .find(named(name))
            .and_then(text)
            .unwrap_or_default()
    };
    Some(Meta {
        token: field("token"),
        base: field("base"),
        host_key: field("host-key"),
        authorized_keys: vm
            .children()
            .filter(named("authorized-key"))
            .filter_map(text)
            .collect(),
        ready: field("ready") == "true",
    })
}

/// Reads a domain's XML.
///
/// # Errors
/// The parser's message, when the XML is not well-formed.
pub(crate) fn parse_domain(xml: &str) -> Result<DomainInfo, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    let mut info = DomainInfo {
        domain_type: root.attribute("type").unwrap_or_default().to_owned(),
        ..DomainInfo::default()
    };
    info.name = child(root, "name").and_then(text).unwrap_or_default();
    info.uuid = child(root, "uuid").and_then(text).unwrap_or_default();
    info.memory_mib = child(root, "memory").and_then(|m| {
        let value = text(m)?.parse().ok()?;
        mebibytes(value, m.attribute("unit"))
    });
    info.cpus = child(root, "vcpu")
        .and_then(text)
        .and_then(|t| t.parse().ok());
    info.meta = child(root, "metadata").and_then(parse_meta);
    if let Some(os) = child(root, "os") {
        info.kernel = child(os, "kernel").and_then(text);
        info.initrd = child(os, "initrd").and_then(text);
        info.cmdline = child(os, "cmdline").and_then(text);
        if info.kernel.is_none() {
            let efi = os.attribute("firmware") == Some("efi")
                || child(os, "loader").is_some_and(|l| l.attribute("type") == Some("pflash"));
            info.firmware = Some(if efi { "efi" } else { "bios" }.to_owned());
        }
    }
    if let Some(devices) = child(root, "devices") {
        for disk in devices.children().filter(|n| n.has_tag_name("disk")) {
            let source = child(disk, "source");
            if let (Some(pool), Some(volume)) = (
                source.and_then(|s| s.attribute("pool")),
                source.and_then(|s| s.attribute("volume")),
            ) {
                info.volumes.push((pool.to_owned(), volume.to_owned()));
                let system =
                    disk.attribute("device") == Some("disk") && child(disk, "readonly").is_none();
                if system && info.disk_bus.is_none() {
                    info.disk_bus = child(disk, "target")
                        .and_then(|t| t.attribute("bus"))
                        .map(str::to_owned);
                    info.pool = Some(pool.to_owned());
                }
            }
        }
        info.network = devices
            .children()
            .filter(|n| n.has_tag_name("interface") && n.attribute("type") == Some("network"))
            .find_map(|n| child(n, "source").and_then(|s| s.attribute("network")))
            .map(str::to_owned);
        info.console_log = devices
            .children()
            .filter(|n| n.has_tag_name("serial"))
            .find_map(|n| child(n, "log").and_then(|l| l.attribute("file")))
            .map(str::to_owned);
    }
    if let Some(commandline) = root
        .children()
        .find(|n| n.has_tag_name((QEMU_NS, "commandline")))
    {
        for arg in commandline
            .children()
            .filter(|n| n.has_tag_name((QEMU_NS, "arg")))
            .filter_map(|n| n.attribute("value"))
        {
            if let Some((port, restricted)) = user_forward(arg) {
                info.ssh_port = Some(port);
                info.isolated = restricted;
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "prov-d-web-0".into(),
            base: "/images/debian.qcow2".into(),
            pool: "prov-test".into(),
            cpus: 2,
            memory: 1536,
            domain_type: DomainType::Qemu,
            disk_bus: DiskBus::Virtio,
            boot: Boot::Kernel {
                kernel: "/images/vmlinuz".into(),
                initrd: Some("/images/initrd.img".into()),
                cmdline: Some("root=/dev/vda rw console=ttyS0".into()),
            },
            nic: Nic::User {
                port: None,
                isolated: true,
            },
            autostart: false,
            authorized_keys: vec!["ssh-ed25519 AAAA deployer".into()],
        }
    }

    fn layout() -> Layout {
        Layout {
            overlay: "prov-d-web-0.qcow2".into(),
            seed: "prov-d-web-0-seed.iso".into(),
            console_log: "/var/log/libvirt/qemu/prov-d-web-0-console.log".into(),
        }
    }

    #[test]
    fn domain_xml_reads_back_as_written() {
        let meta = Meta {
            token: "tok<&>".into(),
            base: "/images/debian.qcow2".into(),
            host_key: "ssh-ed25519 AAAAC3".into(),
            authorized_keys: vec!["ssh-ed25519 AAAA one".into(), "ssh-ed25519 AAAA two".into()],
            ready: false,
        };
        let xml = domain(&spec(), &layout(), &meta, Some(40022), None);
        insta::assert_snapshot!(xml);
        let info = parse_domain(&xml).unwrap();
        assert_eq!(info.name, "prov-d-web-0");
        assert_eq!(info.domain_type, "qemu");
        assert_eq!(info.memory_mib, Some(1536));
        assert_eq!(info.cpus, Some(2));
        assert_eq!(info.kernel.as_deref(), Some("/images/vmlinuz"));
        assert_eq!(info.firmware, None);
        assert_eq!(info.disk_bus.as_deref(), Some("virtio"));
        assert_eq!(info.pool.as_deref(), Some("prov-test"));
        assert_eq!(info.volumes.len(), 2);
        assert_eq!(info.ssh_port, Some(40022));
        assert!(info.isolated);
        assert_eq!(info.meta, Some(meta.clone()));
        // As libvirt stores what virDomainSetMetadata was given.
        let set = xml.replace(
            &meta.element(),
            &meta
                .bare_element()
                .replacen("<vm>", &format!("<prov:vm xmlns:prov='{META_NS}'>"), 1)
                .replace("</vm>", "</prov:vm>"),
        );
        assert_ne!(set, xml);
        assert_eq!(parse_domain(&set).unwrap().meta, Some(meta));
        assert_eq!(
            info.console_log.as_deref(),
            Some(layout().console_log.as_str())
        );
    }

    #[test]
    fn firmware_network_and_sata() {
        let mut s = spec();
        s.boot = Boot::Firmware(Firmware::Efi);
        s.nic = Nic::Network("lab".into());
        s.disk_bus = DiskBus::Sata;
        let xml = domain(
            &s,
            &layout(),
            &Meta::default(),
            None,
            Some("5f0c1d52-0000-4000-8000-000000000001"),
        );
        assert!(!xml.contains("qemu:commandline"));
        assert!(xml.contains("device='cdrom'"));
        let info = parse_domain(&xml).unwrap();
        assert_eq!(info.firmware.as_deref(), Some("efi"));
        assert_eq!(info.network.as_deref(), Some("lab"));
        assert_eq!(info.uuid, "5f0c1d52-0000-4000-8000-000000000001");
        assert_eq!(info.disk_bus.as_deref(), Some("sata"));
        assert_eq!(info.ssh_port, None);
    }

    #[test]
    fn reads_libvirt_normalised_units() {
        let xml = "<domain type='kvm'><name>n</name><memory unit='KiB'>2097152</memory><vcpu placement='static'>4</vcpu><os><type>hvm</type><loader readonly='yes' type='pflash'>/x</loader></os></domain>";
        let info = parse_domain(xml).unwrap();
        assert_eq!(info.memory_mib, Some(2048));
        assert_eq!(info.cpus, Some(4));
        assert_eq!(info.firmware.as_deref(), Some("efi"));
        assert!(info.meta.is_none());
        assert!(parse_domain("<domain").is_err());
    }

    #[test]
    fn forwards() {
        assert_eq!(
            user_forward("user,id=a,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"),
            Some((2222, true))
        );
        assert_eq!(user_forward("user,id=a,hostfwd=tcp::80-:80"), None);
        assert_eq!(user_forward("virtio-net-pci,netdev=a"), None);
    }

    #[test]
    fn volume_xml() {
        let xml = volume("o.qcow2", 10, "qcow2", Some(("/p/b.qcow2", "qcow2")));
        assert!(xml.contains("<backingStore>"));
        assert!(roxmltree::Document::parse(&xml).is_ok());
        assert!(!volume("s.iso", 10, "raw", None).contains("backingStore"));
    }
}
