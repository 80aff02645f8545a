//! [`VirtualBoxProvider`]: the [`Provider`] implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prov_provider::{
    is_valid_name, AttributeChange, AttributeSchema, Attributes, CreateRequest, Observed, Provider,
    ProviderError, UpdateRequest,
};
use serde_json::Value;

use crate::attrs::{self, VmSpec};
use crate::error::config_error;
use crate::runner::{forwarding_rules, VBoxManage, INSTALL_HINT};
use crate::settings::{VirtualBoxSettings, ENV_VBOXMANAGE};
use crate::{KIND, PROVIDER_NAME};
use prov_provider::cloud_init;
use prov_provider::machine::{self as keys, HostKey};

/// Guest property: the idempotency token of the create that made the VM.
const PROP_TOKEN: &str = "/prov/token";
/// Guest property: set to `1` once a create finished (SSH answered).
const PROP_READY: &str = "/prov/ready";
/// Guest property: the base the VM was made from.
const PROP_BASE: &str = "/prov/base";
/// Guest property: the public host key, for `read`.
const PROP_HOST_KEY: &str = "/prov/host_key";
/// The storage controller prov adds for the seed's DVD drive.
const SEED_CONTROLLER: &str = "prov-seed";
/// Guest property read by the image at boot: authorized key lines.
const PROP_AUTHORIZED_KEYS: &str = "/prov/authorized_keys";
/// The name of the NAT forwarding rule prov manages.
const RULE: &str = "ssh";

/// How long a VM may take from `startvm` to an SSH banner.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an ACPI shutdown may take before prov powers the VM off.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `controlvm poweroff` may take to show `poweroff`.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long one SSH banner probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The VirtualBox provider.
#[derive(Debug)]
pub struct VirtualBoxProvider {
    vbox: VBoxManage,
    deployment: String,
    /// Ports handed out by this process (two creates at once must not pick
    /// the same one).
    ports: keys::Ports,
    boot_timeout: Duration,
    shutdown_timeout: Duration,
}

impl VirtualBoxProvider {
    /// The kinds this provider manages.
    pub const KINDS: &'static [&'static str] = &[KIND];

    /// The attributes of `kind`, known without a provider (spec checks).
    #[must_use]
    pub fn kind_schema(kind: &str) -> Option<&'static [AttributeSchema]> {
        (kind == KIND).then_some(attrs::SCHEMA)
    }

    /// Builds a provider of `deployment`'s VMs: VBoxManage is
    /// `PROV_VBOXMANAGE`, else the spec's `vboxmanage`, else `VBoxManage` on
    /// `PATH`.
    ///
    /// # Errors
    /// [`ProviderError::Config`] for an invalid deployment name, or when
    /// VBoxManage is not installed (with an install hint).
    pub fn new(deployment: &str, settings: &VirtualBoxSettings) -> Result<Self, ProviderError> {
        let env = std::env::var_os(ENV_VBOXMANAGE).map(std::path::PathBuf::from);
        let path = std::env::var_os("PATH");
        let Some(program) = settings.program(env, path.as_deref()) else {
            return Err(config_error(format!(
                "VBoxManage is not on PATH: {INSTALL_HINT}"
            )));
        };
        Self::with_runner(VBoxManage::new(program), deployment)
    }

    /// Builds a provider around a given runner.
    ///
    /// # Errors
    /// [`ProviderError::Config`] for an invalid deployment name.
    pub fn with_runner(vbox: VBoxManage, deployment: &str) -> Result<Self, ProviderError> {
        if !is_valid_name(deployment) {
            return Err(config_error(format!(
                "deployment name `{deployment}` must be letters, digits, `-` and `_`, starting with a letter"
            )));
        }
        Ok(Self {
            vbox,
            deployment: deployment.to_owned(),
            ports: keys::Ports::default(),
            boot_timeout: BOOT_TIMEOUT,
            shutdown_timeout: SHUTDOWN_TIMEOUT,
        })
    }

    /// The runner.
    #[must_use]
    pub fn vboxmanage(&self) -> &VBoxManage {
        &self.vbox
    }

    /// The name prefix of this deployment's VMs: `prov-DEPLOYMENT-`.
    fn prefix(&self) -> String {
        format!("prov-{}-", self.deployment)
    }

    fn check_kind(kind: &str) -> Result<(), ProviderError> {
        if kind == KIND {
            Ok(())
        } else {
            Err(ProviderError::unknown_kind(PROVIDER_NAME, kind))
        }
    }

    /// The VM `vm` (name or UUID) as it is now; `None` when not registered.
    async fn observe(&self, vm: &str) -> Result<Option<Observed>, ProviderError> {
        let Some(info) = self.vbox.vm_info(vm).await? else {
            return Ok(None);
        };
        let uuid = info.get("UUID").cloned().unwrap_or_else(|| vm.to_owned());
        let number = |key: &str| -> Value {
            info.get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(Value::Null, Value::from)
        };
        let mut attributes = Attributes::new();
        let mut set = |name: &str, value: Value| {
            attributes.insert(name.to_owned(), value);
        };
        set(
            attrs::NAME,
            info.get("name").cloned().map_or(Value::Null, Value::from),
        );
        set(attrs::CPUS, number("cpus"));
        set(attrs::MEMORY, number("memory"));
        set(attrs::UUID, uuid.clone().into());
        set(
            attrs::STATE,
            info.get("VMState")
                .cloned()
                .map_or(Value::Null, Value::from),
        );
        if let Some(rule) = forwarding_rules(&info).into_iter().find(|r| r.name == RULE) {
            let host = if rule.host_ip.is_empty() {
                "127.0.0.1".to_owned()
            } else {
                rule.host_ip
            };
            set(attrs::SSH_HOST, host.into());
            set(attrs::SSH_PORT, rule.host_port.into());
        }
        let get = |p: &'static str| self.vbox.get_property(&uuid, p);
        if let Some(base) = get(PROP_BASE).await? {
            set(attrs::BASE, base.into());
        }
        if let Some(key) = get(PROP_HOST_KEY).await? {
            set(attrs::HOST_KEY, key.into());
        }
        let keys: Vec<Value> = get(PROP_AUTHORIZED_KEYS)
            .await?
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(Value::from)
            .collect();
        set(attrs::AUTHORIZED_KEYS, Value::Array(keys));
        Ok(Some(Observed {
            id: uuid,
            attributes,
        }))
    }

    /// The VM's `VMState`, `None` when it is not registered.
    async fn vm_state(&self, vm: &str) -> Result<Option<String>, ProviderError> {
        Ok(self
            .vbox
            .vm_info(vm)
            .await?
            .map(|info| info.get("VMState").cloned().unwrap_or_default()))
    }

    /// Waits until the VM shows `poweroff` (or any stopped state).
    async fn wait_stopped(&self, vm: &str, limit: Duration) -> Result<bool, ProviderError> {
        let start = Instant::now();
        loop {
            match self.vm_state(vm).await?.as_deref() {
                None | Some("poweroff" | "aborted" | "saved") => return Ok(true),
                Some(_) => {}
            }
            if start.elapsed() >= limit {
                return Ok(false);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Powers the VM off: ACPI shutdown first, `poweroff` after the bounded
    /// wait. Nothing to do for a VM that is not running.
    async fn shut_down(&self, vm: &str) -> Result<(), ProviderError> {
        if self.wait_stopped(vm, Duration::ZERO).await? {
            return Ok(());
        }
        let acpi = self
            .vbox
            .call(&["controlvm", vm, "acpipowerbutton"])
            .await?;
        if acpi.code == Some(0) && self.wait_stopped(vm, self.shutdown_timeout).await? {
            return Ok(());
        }
        tracing::info!(vm, "ACPI shutdown did not finish in time; powering off");
        self.power_off(vm).await
    }

    /// `controlvm VM poweroff`, then a bounded wait for `poweroff`. A VM that
    /// is not running (or not registered) is fine.
    async fn power_off(&self, vm: &str) -> Result<(), ProviderError> {
        let outcome = self.vbox.call(&["controlvm", vm, "poweroff"]).await?;
        if outcome.code != Some(0)
            && !outcome.stderr.contains("is not currently running")
            && !outcome.is_not_found()
        {
            return Err(outcome.error("controlvm poweroff"));
        }
        if self.wait_stopped(vm, POWEROFF_TIMEOUT).await? {
            Ok(())
        } else {
            Err(ProviderError::Timeout {
                what: format!("VM {vm} to power off"),
                seconds: POWEROFF_TIMEOUT.as_secs(),
            })
        }
    }

    /// Powers the VM off and unregisters it with its disks. A VM that is not
    /// registered is fine. `unregistervm` is retried while the VM's session is
    /// still being unlocked after the power-off.
    async fn remove(&self, vm: &str) -> Result<(), ProviderError> {
        self.power_off(vm).await?;
        let start = Instant::now();
        loop {
            let outcome = self.vbox.call(&["unregistervm", vm, "--delete"]).await?;
            if outcome.code == Some(0) || outcome.is_not_found() {
                return Ok(());
            }
            if !outcome.stderr.contains("locked") || start.elapsed() >= POWEROFF_TIMEOUT {
                return Err(outcome.error("unregistervm"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `startvm VM --type headless`, then a bounded wait for an SSH banner on
    /// `127.0.0.1:port`; fails early when the VM stops running.
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

    /// Waits until the VM's sshd presents `expected`, the host key of its
    /// seed: then the guest has read the seed, and the seed can go.
    async fn await_host_key(
        &self,
        vm: &str,
        port: u16,
        expected: &str,
    ) -> Result<(), ProviderError> {
        let start = Instant::now();
        loop {
            let presented = keys::scan_host_key(([127, 0, 0, 1], port).into(), PROBE_TIMEOUT).await;
            match presented {
                Some(key) if key == expected => return Ok(()),
                Some(key) => {
                    return Err(ProviderError::api(
                        "startvm",
                        format!(
                            "VM {vm} presents the host key {key}, not the one prov gave it in its seed (does the base image read a cloud-init NoCloud seed?)"
                        ),
                    ))
                }
                None if start.elapsed() >= self.boot_timeout => {
                    return Err(ProviderError::Timeout {
                        what: format!("the host key of VM {vm} on 127.0.0.1:{port} (ssh-keyscan)"),
                        seconds: self.boot_timeout.as_secs(),
                    })
                }
                None => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    async fn start_and_wait(&self, vm: &str, port: u16) -> Result<(), ProviderError> {
        self.vbox
            .run(&["startvm", vm, "--type", "headless"])
            .await?;
        let start = Instant::now();
        let mut looks = 0_u32;
        loop {
            if keys::probe(([127, 0, 0, 1], port).into(), PROBE_TIMEOUT)
                .await
                .is_some()
            {
                return Ok(());
            }
            looks += 1;
            if looks % 8 == 0 {
                let state = self.vm_state(vm).await?;
                if state.as_deref() != Some("running") {
                    return Err(ProviderError::api(
                        "startvm",
                        format!(
                            "VM {vm} stopped while booting (VMState {})",
                            state.as_deref().unwrap_or("unregistered")
                        ),
                    ));
                }
            }
            if start.elapsed() >= self.boot_timeout {
                return Err(ProviderError::Timeout {
                    what: format!("SSH on 127.0.0.1:{port} (the NAT forward of VM {vm})"),
                    seconds: self.boot_timeout.as_secs(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `modifyvm` for cpus, memory and the NAT forward to `port`.
    async fn configure(
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
    async fn build(
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

#[async_trait]
impl Provider for VirtualBoxProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn schema(&self, kind: &str) -> Result<&'static [AttributeSchema], ProviderError> {
        Self::check_kind(kind)?;
        Ok(attrs::SCHEMA)
    }

    fn normalize_desired(&self, _kind: &str, desired: &mut Attributes, current: &Attributes) {
        attrs::normalize_desired(desired, current);
    }

    fn update_effects(&self, _kind: &str, changes: &[AttributeChange]) -> Vec<String> {
        if attrs::restarts(changes) {
            vec![format!(
                "the VM is restarted (ACPI shutdown, powered off after {} s, then started)",
                SHUTDOWN_TIMEOUT.as_secs()
            )]
        } else {
            Vec::new()
        }
    }

    async fn read(
        &self,
        kind: &str,
        ids: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError> {
        Self::check_kind(kind)?;
        let mut found = BTreeMap::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let registered: BTreeSet<String> = self
            .vbox
            .list_vms()
            .await?
            .into_iter()
            .flat_map(|(name, uuid)| [name, uuid])
            .collect();
        for id in ids.iter().filter(|id| registered.contains(*id)) {
            if let Some(observed) = self.observe(id).await? {
                found.insert(id.clone(), observed);
            }
        }
        Ok(found)
    }

    async fn find_by_token(
        &self,
        kind: &str,
        tokens: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError> {
        Self::check_kind(kind)?;
        let wanted: BTreeSet<&str> = tokens.iter().map(String::as_str).collect();
        let mut found = BTreeMap::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        let prefix = self.prefix();
        for (name, uuid) in self.vbox.list_vms().await? {
            if !name.starts_with(&prefix) {
                continue;
            }
            let Some(token) = self.vbox.get_property(&uuid, PROP_TOKEN).await? else {
                continue;
            };
            if !wanted.contains(token.as_str()) {
                continue;
            }
            // A VM whose create never finished is not adopted: the create
            // that follows removes and remakes it.
            if self.vbox.get_property(&uuid, PROP_READY).await?.as_deref() != Some("1") {
                continue;
            }
            if let Some(observed) = self.observe(&uuid).await? {
                found.insert(token, observed);
            }
        }
        Ok(found)
    }

    async fn create(&self, request: CreateRequest<'_>) -> Result<Observed, ProviderError> {
        Self::check_kind(request.kind)?;
        let spec = attrs::parse_spec(request.address, request.attributes)?;
        let name = spec.name.clone();
        let started = Instant::now();
        let existing = self
            .vbox
            .list_vms()
            .await?
            .into_iter()
            .find(|(n, _)| *n == name);
        if let Some((_, uuid)) = existing {
            let token = self.vbox.get_property(&uuid, PROP_TOKEN).await?;
            if token.as_deref() != Some(request.token) {
                return Err(ProviderError::api(
                    "create VM",
                    format!("a VM named {name} ({uuid}) already exists and was not made by this create; remove it (VBoxManage unregistervm {name} --delete) or rename it"),
                ));
            }
            let ready = self.vbox.get_property(&uuid, PROP_READY).await?;
            if ready.as_deref() == Some("1") {
                if let Some(observed) = self.observe(&uuid).await? {
                    return Ok(observed);
                }
            }
            tracing::info!(%name, "removing the VM of an interrupted create");
            self.remove(&uuid).await?;
        }
        let key = keys::generate_host_key()?;
        let port = self.ports.allocate(spec.ssh_port).await?;
        let hostname = match request.address.index {
            Some(i) => format!("{}-{i}", request.address.name),
            None => request.address.name.clone(),
        };
        match self
            .build(&spec, &hostname, request.token, &key, port)
            .await
        {
            Ok(observed) => {
                tracing::debug!(%name, elapsed = ?started.elapsed(), "VM created");
                Ok(observed)
            }
            Err(error) => {
                if let Err(cleanup) = self.remove(&name).await {
                    tracing::warn!(%name, %cleanup, "cannot remove the VM of a failed create");
                }
                self.ports.release(port).await;
                Err(error)
            }
        }
    }

    async fn update(&self, request: UpdateRequest<'_>) -> Result<Observed, ProviderError> {
        Self::check_kind(request.kind)?;
        let vm = request.id;
        if let Some(change) = request
            .changes
            .iter()
            .find(|c| !attrs::RESTARTING.contains(&c.name.as_str()))
        {
            return Err(ProviderError::api(
                "update VM",
                format!("`{}` of a VM cannot change in place", change.name),
            ));
        }
        let not_found = || ProviderError::NotFound {
            kind: KIND.to_owned(),
            id: vm.to_owned(),
        };
        let current = self.observe(vm).await?.ok_or_else(not_found)?;
        let mut desired = request.attributes.clone();
        attrs::normalize_desired(&mut desired, &current.attributes);
        let spec = attrs::parse_spec(request.address, &desired)?;
        let current_port = current
            .attributes
            .get(attrs::SSH_PORT)
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        let port = match spec.ssh_port.or(current_port) {
            Some(port) => port,
            None => self.ports.allocate(None).await?,
        };
        self.shut_down(vm).await?;
        self.configure(vm, &spec, port, current_port.is_some())
            .await?;
        self.vbox
            .set_property(vm, PROP_AUTHORIZED_KEYS, &spec.authorized_keys.join("\n"))
            .await?;
        self.start_and_wait(vm, port).await?;
        self.observe(vm).await?.ok_or_else(not_found)
    }

    async fn delete(&self, kind: &str, id: &str) -> Result<(), ProviderError> {
        Self::check_kind(kind)?;
        let started = Instant::now();
        self.remove(id).await?;
        tracing::debug!(id, elapsed = ?started.elapsed(), "VM deleted");
        Ok(())
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
