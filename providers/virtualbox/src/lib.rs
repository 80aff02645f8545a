//! The `virtualbox` provider of prov: VirtualBox VMs driven by `VBoxManage`.
//!
//! One resource kind, `vm`. A VM is named `prov-DEPLOYMENT-HOST` (`web[0]` →
//! `prov-demo-web-0`); its provider id is the UUID VirtualBox gives it.
//!
//! Create:
//! 1. `VBoxManage import BASE.ova --vsys 0 --vmname NAME` when `base` is an
//!    appliance file (`.ova`/`.ovf`), else a linked clone of the base VM's
//!    current snapshot: `VBoxManage clonevm BASE --snapshot SNAP --options link
//!    --name NAME --register`.
//! 2. `modifyvm NAME --cpus N --memory MIB --nic1 nat --natpf1
//!    "ssh,tcp,127.0.0.1,PORT,,22"`: prov reaches the guest through this NAT
//!    port forward and never needs the guest's own address (the "waiting for
//!    IP address" hangs of other tools come from asking guest additions for it).
//! 3. The guest gets its identity from a cloud-init NoCloud seed (an ISO 9660
//!    image labelled `cidata`, written by prov itself with the libvirt
//!    provider's writer, now in [`prov_provider::iso`]): the private host key
//!    prov generated (so the key can be pinned before the first connection),
//!    the deployer's key, the hostname. The seed file lives in a private
//!    temporary directory (0700, the file 0600) and reaches VirtualBox as a
//!    DVD on a controller prov adds (`storagectl NAME --name prov-seed --add
//!    sata`, `storageattach … --type dvddrive --medium FILE`), so the private
//!    key is never on a command line (visible in `ps`), in a log or in a guest
//!    property. Once the VM's sshd presents that key (`ssh-keyscan`), the DVD
//!    is ejected (`--medium emptydrive`), `closemedium dvd FILE` forgets it
//!    and the file is deleted. Guest properties carry only public data:
//!    `/prov/authorized_keys` (the deployer's key, changeable while the VM
//!    exists), and prov's bookkeeping, `/prov/token` (the idempotency token,
//!    for [`prov_provider::Provider::find_by_token`]), `/prov/base`,
//!    `/prov/host_key` (the public key).
//! 4. `startvm NAME --type headless`, then wait (bounded) for an SSH banner on
//!    `127.0.0.1:PORT`.
//!
//! A create that fails after the VM was registered powers it off and
//! `unregistervm --delete`s it before returning the error: nothing is left
//! behind that state does not know of.
//!
//! Read is `list vms` once per batch, then `showvminfo --machinereadable`
//! (VMState, cpus, memory, forwarding rules) and `guestproperty get` per VM;
//! a VM that is not registered is absent. Update: `cpus`, `memory`, `ssh_port`
//! and `authorized_keys` change with the VM powered off (`controlvm
//! acpipowerbutton`, a bounded wait, then `controlvm poweroff`), `modifyvm` /
//! `guestproperty set`, `startvm`: the plan says the VM is restarted. Delete:
//! `controlvm poweroff` (a VM that is not running is fine), `unregistervm
//! --delete`.
//!
//! Every call goes through one runner ([`VBoxManage`]) with a timeout per call;
//! failures quote VBoxManage's stderr and exit status.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod attrs;
mod build;
mod error;
mod power;
mod provider;
mod runner;
mod settings;

pub use attrs::check_vm;
pub use provider::VirtualBoxProvider;
pub use runner::{parse_list_vms, parse_machine_readable, VBoxManage};
pub use settings::{VirtualBoxSettings, ENV_VBOXMANAGE};

/// The provider's name as the spec writes it.
pub const PROVIDER_NAME: &str = "virtualbox";

/// The one resource kind this provider manages.
pub const KIND: &str = "vm";

/// The one kind, its provider and its attributes.
pub(crate) const VM: prov_provider::SingleKind = prov_provider::SingleKind {
    provider: PROVIDER_NAME,
    kind: KIND,
    schema: attrs::SCHEMA,
};
