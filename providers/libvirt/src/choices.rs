//! The closed sets of values some VM attributes take (domain type, disk bus,
//! firmware): each an enum, written in attributes, state and plans as the
//! same lowercase word as always.

use std::fmt;

/// An attribute value out of a closed set, written as one lowercase word.
pub trait Choice: Copy + Default + PartialEq + fmt::Debug + 'static {
    /// Every value, in the order messages list them.
    const ALL: &'static [Self];

    /// The value as attributes, state and the domain XML write it.
    fn name(self) -> &'static str;

    /// The value written `name`, if there is one.
    #[must_use]
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Every value's name, joined for a message (`kvm, qemu`).
    #[must_use]
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How QEMU runs the guest (`domain_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DomainType {
    /// Hardware virtualization (`kvm`, the default).
    #[default]
    Kvm,
    /// Software emulation, TCG (`qemu`): no `/dev/kvm` needed.
    Qemu,
}

impl Choice for DomainType {
    const ALL: &'static [Self] = &[Self::Kvm, Self::Qemu];

    fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
        }
    }
}

/// The bus of the system disk (`disk_bus`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiskBus {
    /// Paravirtualized (`virtio`, the default): device `vda`.
    #[default]
    Virtio,
    /// An emulated SATA controller (`sata`): device `sda`.
    Sata,
    /// A virtio-scsi controller (`scsi`): device `sda`.
    Scsi,
}

impl Choice for DiskBus {
    const ALL: &'static [Self] = &[Self::Virtio, Self::Sata, Self::Scsi];

    fn name(self) -> &'static str {
        match self {
            Self::Virtio => "virtio",
            Self::Sata => "sata",
            Self::Scsi => "scsi",
        }
    }
}

/// The firmware a VM booting from its disk starts with (`firmware`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (`bios`, the default).
    #[default]
    Bios,
    /// UEFI with OVMF (`efi`).
    Efi,
}

impl Choice for Firmware {
    const ALL: &'static [Self] = &[Self::Bios, Self::Efi];

    fn name(self) -> &'static str {
        match self {
            Self::Bios => "bios",
            Self::Efi => "efi",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<C: Choice>() {
        for choice in C::ALL {
            assert_eq!(C::from_name(choice.name()), Some(*choice));
        }
        assert_eq!(C::from_name("nope"), None);
        assert!(C::ALL.contains(&C::default()));
    }

    #[test]
    fn names_are_the_words_state_holds() {
        round_trips::<DomainType>();
        round_trips::<DiskBus>();
        round_trips::<Firmware>();
        assert_eq!(DomainType::names(), "kvm, qemu");
        assert_eq!(DiskBus::names(), "virtio, sata, scsi");
        assert_eq!(Firmware::names(), "bios, efi");
        assert_eq!(DomainType::default().name(), "kvm");
        assert_eq!(DiskBus::default().name(), "virtio");
        assert_eq!(Firmware::default().name(), "bios");
    }
}
