//! [`VirtualBoxProvider`]: the [`Provider`] implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prov_provider::machine::{self, build_or_clean_up, check_in_place};
use prov_provider::{
    AttributeChange, AttributeSchema, Attributes, CreateRequest, Observed, Provider, ProviderError,
    UpdateRequest,
};
use serde_json::Value;

use crate::attrs;
use crate::build::{PROP_AUTHORIZED_KEYS, PROP_BASE, PROP_HOST_KEY, PROP_READY, PROP_TOKEN, RULE};
use crate::error::config_error;
use crate::power::{BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use crate::runner::{forwarding_rules, VBoxManage, INSTALL_HINT};
use crate::settings::{VirtualBoxSettings, ENV_VBOXMANAGE};
use crate::{KIND, VM};

/// The VirtualBox provider.
#[derive(Debug)]
pub struct VirtualBoxProvider {
    pub(crate) vbox: VBoxManage,
    deployment: String,
    /// Ports handed out by this process (two creates at once must not pick
    /// the same one).
    ports: machine::Ports,
    /// How long a VM may take from `startvm` to an SSH banner.
    pub(crate) boot_timeout: Duration,
    /// How long an ACPI shutdown may take before prov powers the VM off.
    pub(crate) shutdown_timeout: Duration,
}

impl VirtualBoxProvider {
    /// The kinds this provider manages.
    pub const KINDS: &'static [&'static str] = &[KIND];

    /// The attributes of `kind`, known without a provider (spec checks).
    #[must_use]
    pub fn kind_schema(kind: &str) -> Option<&'static [AttributeSchema]> {
        VM.schema_of(kind)
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
        VM.check_deployment(deployment)?;
        Ok(Self {
            vbox,
            deployment: deployment.to_owned(),
            ports: machine::Ports::default(),
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

    /// The VM `vm` (name or UUID) as it is now; `None` when not registered.
    pub(crate) async fn observe(&self, vm: &str) -> Result<Option<Observed>, ProviderError> {
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
        let keys = get(PROP_AUTHORIZED_KEYS).await?.unwrap_or_default();
        set(
            attrs::AUTHORIZED_KEYS,
            prov_provider::authorized_keys_from_lines(&keys),
        );
        Ok(Some(Observed {
            id: uuid,
            attributes,
        }))
    }
}

#[async_trait]
impl Provider for VirtualBoxProvider {
    fn name(&self) -> &str {
        VM.provider
    }

    fn schema(&self, kind: &str) -> Result<&'static [AttributeSchema], ProviderError> {
        VM.schema(kind)
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
        VM.check(kind)?;
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let registered: BTreeSet<String> = self
            .vbox
            .list_vms()
            .await?
            .into_iter()
            .flat_map(|(name, uuid)| [name, uuid])
            .collect();
        let listed: Vec<&String> = ids.iter().filter(|id| registered.contains(*id)).collect();
        machine::read_each(listed, |id| self.observe(id)).await
    }

    async fn find_by_token(
        &self,
        kind: &str,
        tokens: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError> {
        VM.check(kind)?;
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
        VM.check(request.kind)?;
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
        let key = machine::generate_host_key()?;
        let port = self.ports.allocate(spec.ssh_port).await?;
        let hostname = machine::host_name(request.address);
        let build = self.build(&spec, &hostname, request.token, &key, port);
        let clean_up = self.ports.release_after(Some(port), self.remove(&name));
        build_or_clean_up("VM", &name, started, build, clean_up).await
    }

    async fn update(&self, request: UpdateRequest<'_>) -> Result<Observed, ProviderError> {
        VM.check(request.kind)?;
        let vm = request.id;
        check_in_place(
            request.changes,
            |name| attrs::RESTARTING.contains(&name),
            "update VM",
            "a VM",
        )?;
        let not_found = || VM.not_found(vm);
        let current = self.observe(vm).await?.ok_or_else(not_found)?;
        let mut desired = request.attributes.clone();
        attrs::normalize_desired(&mut desired, &current.attributes);
        let spec = attrs::parse_spec(request.address, &desired)?;
        let current_port = machine::ssh_port(&current.attributes);
        let port = self.ports.allocate(spec.ssh_port.or(current_port)).await?;
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
        VM.check(kind)?;
        let started = Instant::now();
        self.remove(id).await?;
        tracing::debug!(id, elapsed = ?started.elapsed(), "VM deleted");
        Ok(())
    }
}
