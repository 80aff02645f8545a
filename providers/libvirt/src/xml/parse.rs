//! Reading a domain's XML back into what prov needs of it.

use super::{Meta, META_NS, QEMU_NS};

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
pub(super) fn user_forward(arg: &str) -> Option<(u16, bool)> {
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
