//! The `libvirt` provider of prov: VMs on libvirt (QEMU/KVM), each a domain
//! on a qcow2 overlay of a shared base image, given its SSH identity before
//! its first boot.
//!
//! One resource kind, `vm`. A VM is named `prov-DEPLOYMENT-HOST` (`web[0]` →
//! `prov-demo-web-0`); the name is its provider id, and its volumes are
//! `NAME.qcow2` (the overlay) and `NAME-seed.iso` (the cloud-init seed).
//!
//! Create:
//! 1. The pool must exist and be active (prov does not invent a "default"
//!    pool; the error says how to make one). The base is a volume of the
//!    pool, or a local file uploaded once ([`image`](crate::image)).
//! 2. prov generates the VM's ed25519 host key and writes a NoCloud seed
//!    (ISO 9660, label `cidata`, written by prov itself: no genisoimage
//!    needed) with it, the deployer's key for root and the hostname. The
//!    public key is recorded, so the first SSH connection is already pinned.
//! 3. The overlay volume (qcow2, backed by the base) and the domain are
//!    created. The domain's `<metadata>` holds prov's bookkeeping: the
//!    idempotency token (for [`prov_provider::Provider::find_by_token`]),
//!    the base, the host key, the authorized keys, and `ready` once the
//!    create finished.
//! 4. Networking is a QEMU user-mode NIC with `127.0.0.1:PORT` forwarded to
//!    the guest's port 22 (no bridge, no DHCP lease to wait for), or a named
//!    libvirt network whose DHCP lease gives the address.
//! 5. The domain starts; prov waits (bounded) for an SSH banner and points
//!    at the serial console log when none comes.
//!
//! A create that fails removes the domain and its overlay and seed volumes
//! before returning: nothing is left half-created. A create interrupted by a
//! crash is finished by the next run: a domain with the same token but not
//! `ready` is removed and made again.
//!
//! Without the `client` feature (on by default) the crate holds only what a
//! spec needs: the settings type, the attribute schema and the VM rules.
//!
//! Update: `autostart` in place; memory, CPUs, boot, network and the port
//! shut the VM down (ACPI, powered off after a bounded wait), redefine it
//! and start it again. Base, pool, disk bus and authorized keys force a new
//! VM. Delete: power off, undefine (with NVRAM), delete the overlay and
//! seed volumes; the base image stays.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

// Known in every build: the settings, the attribute schema and the VM
// rules, which spec checks use.
mod attrs;
mod choices;
mod settings;

// The libvirt client and the provider: the `client` feature (on by default;
// links libvirt).
#[cfg(feature = "client")]
mod build;
#[cfg(feature = "client")]
mod conn;
#[cfg(feature = "client")]
mod error;
#[cfg(feature = "client")]
mod image;
#[cfg(feature = "client")]
mod observe;
#[cfg(feature = "client")]
mod power;
#[cfg(feature = "client")]
mod provider;
#[cfg(feature = "client")]
mod xml;

/// The domain XML reader, for the fuzz targets in `fuzz/` (compiled only by
/// `cargo fuzz`): what a domain's XML says, as text.
///
/// # Errors
/// The parser's message, when the XML is not well-formed.
#[cfg(all(fuzzing, feature = "client"))]
pub fn fuzz_parse_domain(xml: &str) -> Result<String, String> {
    xml::parse_domain(xml).map(|info| format!("{info:?}"))
}

pub use attrs::{check_vm, DEFAULT_POOL};
pub use choices::{Choice, DiskBus, DomainType, Firmware};
#[cfg(feature = "client")]
pub use provider::LibvirtProvider;
pub use settings::{
    timeout, LibvirtSettings, DEFAULT_BOOT_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_URI,
};

/// The provider's name as the spec writes it.
pub const PROVIDER_NAME: &str = "libvirt";

/// The one resource kind this provider manages.
pub const KIND: &str = "vm";

/// The one kind, its provider and its attributes.
pub(crate) const VM: prov_provider::SingleKind = prov_provider::SingleKind {
    provider: PROVIDER_NAME,
    kind: KIND,
    schema: attrs::SCHEMA,
};

/// The attributes of `kind`, known without a provider (spec checks); `None`
/// for a kind this provider does not manage.
#[must_use]
pub fn kind_schema(kind: &str) -> Option<&'static [prov_provider::AttributeSchema]> {
    VM.schema_of(kind)
}

#[cfg(all(test, feature = "client"))]
mod tests;
