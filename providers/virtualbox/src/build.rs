//! Making a VM: an imported appliance or a linked clone, its CPUs, memory
//! and NAT forward, the guest properties prov keeps its bookkeeping in, and
//! the cloud-init seed that hands over its identity at first boot.

use prov_provider::cloud_init;
use prov_provider::machine::HostKey;
use prov_provider::{Observed, ProviderError};

use crate::attrs::VmSpec;
use crate::error::config_error;
use crate::provider::VirtualBoxProvider;
use crate::runner::forwarding_rules;

/// Guest property: the idempotency token of the create that made the VM.
pub(crate) const PROP_TOKEN: &str = "/prov/token";
/// Guest property: set to `1` once a create finished (SSH answered).
pub(crate) const PROP_READY: &str = "/prov/ready";
/// Guest property: the base the VM was made from.
pub(crate) const PROP_BASE: &str = "/prov/base";
/// Guest property: the public host key, for `read`.
pub(crate) const PROP_HOST_KEY: &str = "/prov/host_key";
/// Guest property read by the image at boot: authorized key lines.
pub(crate) const PROP_AUTHORIZED_KEYS: &str = "/prov/authorized_keys";
/// The storage controller prov adds for the seed's DVD drive.
const SEED_CONTROLLER: &str = "prov-seed";
/// The name of the NAT forwarding rule prov manages.
pub(crate) const RULE: &str = "ssh";

impl VirtualBoxProvider {
    /// Puts `medium` (a seed file, or `emptydrive` to eject) into the DVD
    /// drive on prov's seed controller.
    async fn seed_drive(&self, name: &str, medium: &str) -> Result<(), ProviderError> {
        self.vbox
            .run(&[
                "storageattach",
                name,
                "--storagectl",
                SEED_CONTROLLER,
                "--port",
                "0",
                "--device",
                "0",
                "--type",
                "dvddrive",
                "--medium",
                medium,
            ])
            .await
            .map(drop)
    }

    /// `modifyvm` for cpus, memory and the NAT forward to `port`.
    pub(crate) async fn configure(
        &self,
        vm: &str,
        spec: &VmSpec,
        port: u16,
        replace_rule: bool,
    ) -> Result<(), ProviderError> {
        if replace_rule {
            self.vbox
                .run(&["modifyvm", vm, "--natpf1", "delete", RULE])
                .await?;
        }
        let (cpus, memory) = (spec.cpus.to_string(), spec.memory.to_string());
        let rule = format!("{RULE},tcp,127.0.0.1,{port},,22");
        self.vbox
            .run(&[
                "modifyvm", vm, "--cpus", &cpus, "--memory", &memory, "--nic1", "nat", "--natpf1",
                &rule,
            ])
            .await
            .map(drop)
    }

    /// Everything after the name was checked free: make the VM, configure,
    /// hand over the keys, start, wait. The caller removes the VM on failure.
    pub(crate) async fn build(
        &self,
        spec: &VmSpec,
        hostname: &str,
        token: &str,
        key: &HostKey,
        port: u16,
    ) -> Result<Observed, ProviderError> {
        let name = spec.name.as_str();
        if spec.imports() {
            self.vbox
                .run(&["import", &spec.base, "--vsys", "0", "--vmname", name])
                .await?;
        } else {
            let info = self.vbox.vm_info(&spec.base).await?.ok_or_else(|| {
                config_error(format!(
                    "base VM `{}` is not registered (VBoxManage list vms); for an appliance give a .ova file",
                    spec.base
                ))
            })?;
            let snapshot = info.get("CurrentSnapshotName").ok_or_else(|| {
                config_error(format!(
                    "base VM `{0}` has no snapshot to make a linked clone from: VBoxManage snapshot {0} take prov-base",
                    spec.base
                ))
            })?;
            self.vbox
                .run(&[
                    "clonevm",
                    &spec.base,
                    "--snapshot",
                    snapshot,
                    "--options",
                    "link",
                    "--name",
                    name,
                    "--register",
                ])
                .await?;
        }
        self.vbox.set_property(name, PROP_TOKEN, token).await?;
        let info = self.vbox.vm_info(name).await?.ok_or_else(|| {
            ProviderError::api(
                "import",
                format!("VM {name} is not registered after import"),
            )
        })?;
        let has_rule = forwarding_rules(&info).iter().any(|r| r.name == RULE);
        self.configure(name, spec, port, has_rule).await?;
        self.vbox.set_property(name, PROP_BASE, &spec.base).await?;
        self.vbox
            .set_property(name, PROP_HOST_KEY, &key.public)
            .await?;
        let authorized = spec.authorized_keys.join("\n");
        self.vbox
            .set_property(name, PROP_AUTHORIZED_KEYS, &authorized)
            .await?;
        // The private host key goes in a seed file, never on a command line
        // or in a guest property; the file lives only until the VM answers.
        let seed = SeedFile::write(
            name,
            &cloud_init::seed(
                &format!("prov-{token}"),
                &cloud_init::hostname(hostname),
                key,
                &spec.authorized_keys,
            )
            .image()?,
        )?;
        let medium = seed.path.to_string_lossy().into_owned();
        self.vbox
            .run(&[
                "storagectl",
                name,
                "--name",
                SEED_CONTROLLER,
                "--add",
                "sata",
                "--portcount",
                "1",
            ])
            .await?;
        self.seed_drive(name, &medium).await?;
        self.start_and_wait(name, port).await?;
        self.await_host_key(name, port, &key.public).await?;
        self.seed_drive(name, "emptydrive").await?;
        self.vbox.run(&["closemedium", "dvd", &medium]).await?;
        drop(seed);
        self.vbox.set_property(name, PROP_READY, "1").await?;
        self.observe(name).await?.ok_or_else(|| {
            ProviderError::api("create", format!("VM {name} vanished after it started"))
        })
    }
}

/// A seed image in a private directory (mode 0700, the file 0600), removed
/// with it when dropped.
struct SeedFile {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl SeedFile {
    fn write(vm: &str, image: &[u8]) -> Result<Self, ProviderError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let failed = |e: std::io::Error| {
            ProviderError::api_caused_by("write the seed", format!("the seed of VM {vm}"), e)
        };
        let dir = tempfile::Builder::new()
            .prefix("prov-vbox-seed-")
            .tempdir()
            .map_err(failed)?;
        let path = dir.path().join(format!("{vm}-seed.iso"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed)?;
        file.write_all(image).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        Ok(Self { _dir: dir, path })
    }
}
