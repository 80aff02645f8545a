//! Domain and volume XML: what prov defines, and reading a domain's XML back
//! into attributes.
//!
//! prov's own bookkeeping lives in the domain's `<metadata>` under its own
//! namespace ([`META_NS`]): the idempotency token of the create, the base as
//! the spec wrote it, the public host key, and whether the create finished.

mod define;
mod parse;

pub(crate) use define::{domain, volume};
pub(crate) use parse::parse_domain;

/// The namespace of prov's element in a domain's `<metadata>`.
pub(crate) const META_NS: &str = "https://prov.invalid/xmlns/libvirt/1";
/// The namespace of libvirt's QEMU command-line passthrough.
const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

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

#[cfg(test)]
mod tests {
    use super::parse::user_forward;
    use super::*;
    use crate::attrs::{Boot, Nic, VmSpec};
    use crate::choices::{DiskBus, DomainType, Firmware};

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
