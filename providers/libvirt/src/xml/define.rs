//! The XML prov defines domains and volumes from.

use super::{escape, Layout, Meta, QEMU_NS};
use crate::attrs::{Boot, Nic, VmSpec};
use crate::choices::{Choice, DiskBus, DomainType, Firmware};

/// The guest's user-mode network (documentation range, off 10.0.2.x).
const USER_NET: &str = "192.0.2.0/24";

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
