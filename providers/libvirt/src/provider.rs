//! [`LibvirtProvider`]: the [`Provider`] implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prov_provider::machine::{self, HostKey};
use prov_provider::{
    is_valid_name, AttributeChange, AttributeSchema, Attributes, CreateRequest, Observed, Provider,
    ProviderError, UpdateRequest,
};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::attrs::{self, Boot, Nic, VmSpec};
use crate::conn::{DomainState, Libvirt};
use crate::error::{config_error, missing};
use crate::settings::{LibvirtSettings, DEFAULT_BOOT_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT};
use crate::xml::{self, Layout, Meta};
use prov_provider::cloud_init as seed;

use crate::{image, KIND, PROVIDER_NAME};

/// The libvirt provider.
#[derive(Debug)]
pub struct LibvirtProvider {
    pub(crate) libvirt: Libvirt,
    /// The deployment whose VMs this provider manages.
    deployment: String,
    /// How long a VM may take from start to an SSH banner.
    pub(crate) boot_timeout: Duration,
    /// How long an ACPI shutdown may take before power-off.
    pub(crate) shutdown_timeout: Duration,
    /// Ports handed out by this process (two creates at once must not pick
    /// the same one).
    ports: machine::Ports,
    /// Held while a base image is looked up or uploaded.
    bases: Mutex<()>,
}

impl LibvirtProvider {
    /// The kinds this provider manages.
    pub const KINDS: &'static [&'static str] = &[KIND];

    /// The attributes of `kind`, known without a provider (spec checks).
    #[must_use]
    pub fn kind_schema(kind: &str) -> Option<&'static [AttributeSchema]> {
        crate::kind_schema(kind)
    }

    /// Connects to the settings' URI, to manage `deployment`'s VMs.
    ///
    /// # Errors
    /// [`ProviderError::Config`] for an invalid deployment name, or when
    /// libvirt cannot be reached (with how to start libvirtd).
    pub async fn connect(
        deployment: &str,
        settings: &LibvirtSettings,
    ) -> Result<Self, ProviderError> {
        if !is_valid_name(deployment) {
            return Err(config_error(format!(
                "deployment name `{deployment}` must be letters, digits, `-` and `_`, starting with a letter"
            )));
        }
        Ok(Self {
            libvirt: Libvirt::open(&settings.uri).await?,
            deployment: deployment.to_owned(),
            boot_timeout: settings.boot_timeout.unwrap_or(DEFAULT_BOOT_TIMEOUT),
            shutdown_timeout: settings
                .shutdown_timeout
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            ports: machine::Ports::default(),
            bases: Mutex::new(()),
        })
    }

    fn check_kind(kind: &str) -> Result<(), ProviderError> {
        if kind == KIND {
            Ok(())
        } else {
            Err(ProviderError::unknown_kind(PROVIDER_NAME, kind))
        }
    }

    /// The name prefix of this deployment's domains: `prov-DEPLOYMENT-`.
    fn prefix(&self) -> String {
        format!("prov-{}-", self.deployment)
    }

    /// The volumes and console log of domain `name`.
    pub(crate) fn layout(&self, name: &str) -> Layout {
        Layout {
            overlay: format!("{name}.qcow2"),
            seed: format!("{name}-seed.iso"),
            console_log: self
                .libvirt
                .console_log_dir()
                .join(format!("{name}-console.log"))
                .to_string_lossy()
                .into_owned(),
        }
    }

    /// Domain `name` as it is now; `None` when it is not defined.
    async fn observe(&self, name: &str) -> Result<Option<Observed>, ProviderError> {
        match self.libvirt.domain(name).await? {
            Some(state) => self.observed(name, &state).await.map(Some),
            None => Ok(None),
        }
    }

    /// Domain `name` in prov's terms, from what libvirt reported of it.
    async fn observed(&self, name: &str, state: &DomainState) -> Result<Observed, ProviderError> {
        let info = xml::parse_domain(&state.xml)
            .map_err(|e| ProviderError::api("read domain XML", format!("{name}: {e}")))?;
        let meta = info.meta.clone().unwrap_or_default();
        let mut attributes = Attributes::new();
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                attributes.insert(key.to_owned(), value);
            }
        };
        let string = |s: &Option<String>| s.clone().map(Value::from);
        set(attrs::NAME, Some(info.name.clone().into()));
        set(attrs::UUID, Some(info.uuid.clone().into()));
        set(
            attrs::BASE,
            Some(meta.base.clone())
                .filter(|b| !b.is_empty())
                .map(Value::from),
        );
        set(attrs::POOL, string(&info.pool));
        set(attrs::CPUS, info.cpus.map(Value::from));
        set(attrs::MEMORY, info.memory_mib.map(Value::from));
        set(attrs::DOMAIN_TYPE, Some(info.domain_type.clone().into()));
        set(attrs::DISK_BUS, string(&info.disk_bus));
        set(attrs::FIRMWARE, string(&info.firmware));
        set(attrs::KERNEL, string(&info.kernel));
        set(attrs::INITRD, string(&info.initrd));
        set(attrs::CMDLINE, string(&info.cmdline));
        set(attrs::NETWORK, string(&info.network));
        set(attrs::AUTOSTART, Some(state.autostart.into()));
        set(attrs::RUNNING, Some(state.active.into()));
        set(
            attrs::AUTHORIZED_KEYS,
            Some(Value::from(meta.authorized_keys.clone())),
        );
        set(
            attrs::HOST_KEY,
            Some(meta.host_key.clone())
                .filter(|k| !k.is_empty())
                .map(Value::from),
        );
        set(
            attrs::STATE,
            Some(if state.active { "running" } else { "shut off" }.into()),
        );
        set(attrs::CONSOLE_LOG, string(&info.console_log));
        if info.network.is_none() {
            set(attrs::SSH_PORT, info.ssh_port.map(Value::from));
            set(attrs::ISOLATED, Some(info.isolated.into()));
            if info.ssh_port.is_some() {
                set(attrs::SSH_HOST, Some("127.0.0.1".into()));
            }
        } else if state.active {
            let leased = self.libvirt.leased_addresses(name).await?;
            set(
                attrs::SSH_HOST,
                leased.first().map(|a| a.to_string().into()),
            );
        }
        Ok(Observed {
            id: info.name,
            attributes,
        })
    }

    /// Removes domain `name` and its overlay and seed volumes, wherever they
    /// are; what is already gone is fine. The base image stays.
    async fn remove(&self, name: &str) -> Result<(), ProviderError> {
        let layout = self.layout(name);
        let mut pools: BTreeSet<String> = BTreeSet::new();
        if let Some(state) = self.libvirt.domain(name).await? {
            if let Ok(info) = xml::parse_domain(&state.xml) {
                pools.extend(info.volumes.into_iter().map(|(pool, _)| pool));
            }
            self.power_off(name).await?;
            self.libvirt.undefine(name).await?;
        }
        pools.extend(self.libvirt.active_pools().await?);
        for pool in &pools {
            for volume in [&layout.overlay, &layout.seed] {
                self.libvirt.delete_volume(pool, volume).await?;
            }
        }
        Ok(())
    }

    /// Swaps the seed of the shut-down VM `name` for one that adds the
    /// authorized keys of `spec` at the next boot (see [`seed::reseed`]).
    async fn replace_seed(
        &self,
        address: &prov_provider::Address,
        name: &str,
        spec: &VmSpec,
        meta: &Meta,
    ) -> Result<(), ProviderError> {
        let layout = self.layout(name);
        let keys = spec.authorized_keys.join("\n");
        let digest = prov_provider::sha256_hex(keys.as_bytes());
        let instance_id = format!("prov-{}-keys-{}", meta.token, &digest[..12]);
        let seed = seed::reseed(
            &instance_id,
            &seed::hostname(&host_name(address)),
            &spec.authorized_keys,
        )
        .image()?;
        let length = seed.len() as u64;
        self.libvirt.delete_volume(&spec.pool, &layout.seed).await?;
        self.libvirt
            .create_volume(&spec.pool, xml::volume(&layout.seed, length, "raw", None))
            .await?;
        self.libvirt
            .upload(
                &spec.pool,
                &layout.seed,
                length,
                Box::new(std::io::Cursor::new(seed)),
            )
            .await
    }

    /// Checks what a VM needs from the machine: the pool, and the kernel
    /// and initrd files when libvirtd runs here.
    async fn check_machine(&self, spec: &VmSpec) -> Result<(), ProviderError> {
        self.libvirt.check_pool(&spec.pool).await?;
        if let (Boot::Kernel { kernel, initrd, .. }, true) = (&spec.boot, self.libvirt.is_local()) {
            for (what, file) in [("kernel", Some(kernel)), ("initrd", initrd.as_ref())] {
                if let Some(file) = file {
                    if !Path::new(file).is_file() {
                        return Err(missing(format!(
                            "{what} {file} does not exist (direct kernel boot needs it on the libvirt host)"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Everything after the checks: seed, overlay, domain, start, wait.
    /// The caller removes what was made when this fails.
    async fn build(
        &self,
        request: &CreateRequest<'_>,
        spec: &VmSpec,
        key: &HostKey,
        port: Option<u16>,
    ) -> Result<Observed, ProviderError> {
        let name = spec.name.as_str();
        let layout = self.layout(name);
        let base = {
            let _guard = self.bases.lock().await;
            image::ensure(&self.libvirt, &spec.pool, &spec.base).await?
        };
        let host = host_name(request.address);
        let seed = seed::seed(
            &format!("prov-{}", request.token),
            &seed::hostname(&host),
            key,
            &spec.authorized_keys,
        )
        .image()?;
        let length = seed.len() as u64;
        self.libvirt
            .create_volume(&spec.pool, xml::volume(&layout.seed, length, "raw", None))
            .await?;
        self.libvirt
            .upload(
                &spec.pool,
                &layout.seed,
                length,
                Box::new(std::io::Cursor::new(seed)),
            )
            .await?;
        self.libvirt
            .create_volume(
                &spec.pool,
                xml::volume(
                    &layout.overlay,
                    base.capacity,
                    "qcow2",
                    Some((&base.path, &base.format)),
                ),
            )
            .await?;
        let mut meta = Meta {
            token: request.token.to_owned(),
            base: spec.base.clone(),
            host_key: key.public.clone(),
            authorized_keys: spec.authorized_keys.clone(),
            ready: false,
        };
        self.libvirt
            .define(xml::domain(spec, &layout, &meta, port, None))
            .await?;
        self.libvirt.set_autostart(name, spec.autostart).await?;
        self.start_and_wait(name, spec, port).await?;
        meta.ready = true;
        self.libvirt.set_meta(name, meta.bare_element()).await?;
        self.observe(name).await?.ok_or_else(|| {
            ProviderError::api(
                "create VM",
                format!("domain {name} vanished after it started"),
            )
        })
    }

    fn current_port(current: &Attributes) -> Option<u16> {
        current
            .get(attrs::SSH_PORT)
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
    }
}

#[async_trait]
impl Provider for LibvirtProvider {
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
            let mut effects = vec![format!(
                "the VM is shut down (ACPI, powered off after {} s), redefined and started again",
                self.shutdown_timeout.as_secs()
            )];
            if changes.iter().any(|c| c.name == attrs::AUTHORIZED_KEYS) {
                effects.push(
                    "the new authorized keys come from a new cloud-init seed at that boot; \
                     the disk, host key and address stay (keys already authorized stay too)"
                        .to_owned(),
                );
            }
            effects
        } else if changes.iter().any(|c| c.name == attrs::RUNNING) {
            vec!["the VM is started".to_owned()]
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
        for id in ids {
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
        for name in self.libvirt.domain_names(&self.prefix()).await? {
            let Some(state) = self.libvirt.domain(&name).await? else {
                continue;
            };
            let Some(meta) = xml::parse_domain(&state.xml).ok().and_then(|i| i.meta) else {
                continue;
            };
            // A domain whose create never finished is not adopted: the
            // create that follows removes and remakes it.
            if !meta.ready || !wanted.contains(meta.token.as_str()) {
                continue;
            }
            found.insert(meta.token, self.observed(&name, &state).await?);
        }
        Ok(found)
    }

    async fn create(&self, request: CreateRequest<'_>) -> Result<Observed, ProviderError> {
        Self::check_kind(request.kind)?;
        let spec = attrs::parse_spec(request.address, request.attributes)?;
        let name = spec.name.clone();
        let started = Instant::now();
        self.check_machine(&spec).await?;
        if let Some(state) = self.libvirt.domain(&name).await? {
            let meta = xml::parse_domain(&state.xml).ok().and_then(|i| i.meta);
            match meta {
                Some(meta) if meta.token == request.token => {
                    if meta.ready {
                        return self.observed(&name, &state).await;
                    }
                    tracing::info!(%name, "removing the domain of an interrupted create");
                }
                _ => {
                    return Err(ProviderError::api(
                        "create VM",
                        format!(
                            "a domain named {name} already exists and was not made by this create; remove it (`virsh -c {uri} destroy {name}; virsh -c {uri} undefine {name} --nvram`) or import it",
                            uri = self.libvirt.uri()
                        ),
                    ));
                }
            }
        }
        // Leftovers of an interrupted create (volumes without a domain).
        self.remove(&name).await?;
        let key = machine::generate_host_key()?;
        let port = match &spec.nic {
            Nic::User { port, .. } => Some(self.ports.allocate(*port).await?),
            Nic::Network(_) => None,
        };
        match self.build(&request, &spec, &key, port).await {
            Ok(observed) => {
                tracing::debug!(%name, elapsed = ?started.elapsed(), "VM created");
                Ok(observed)
            }
            Err(error) => {
                if let Err(cleanup) = self.remove(&name).await {
                    tracing::warn!(%name, %cleanup, "cannot remove the VM of a failed create");
                }
                if let Some(port) = port {
                    self.ports.release(port).await;
                }
                Err(error)
            }
        }
    }

    async fn update(&self, request: UpdateRequest<'_>) -> Result<Observed, ProviderError> {
        Self::check_kind(request.kind)?;
        let name = request.id;
        if let Some(change) = request
            .changes
            .iter()
            .find(|c| !attrs::changes_in_place(&c.name))
        {
            return Err(ProviderError::api(
                "update VM",
                format!("`{}` of a VM cannot change in place", change.name),
            ));
        }
        let not_found = || ProviderError::NotFound {
            kind: KIND.to_owned(),
            id: name.to_owned(),
        };
        let current = self.observe(name).await?.ok_or_else(not_found)?;
        let mut desired = request.attributes.clone();
        attrs::normalize_desired(&mut desired, &current.attributes);
        let spec = attrs::parse_spec(request.address, &desired)?;
        if attrs::restarts(request.changes) {
            self.check_machine(&spec).await?;
            let state = self.libvirt.domain(name).await?.ok_or_else(not_found)?;
            let info = xml::parse_domain(&state.xml)
                .map_err(|e| ProviderError::api("read domain XML", format!("{name}: {e}")))?;
            let mut meta = info.meta.unwrap_or_default();
            let rekey = request
                .changes
                .iter()
                .any(|c| c.name == attrs::AUTHORIZED_KEYS);
            meta.authorized_keys.clone_from(&spec.authorized_keys);
            let port = match &spec.nic {
                Nic::User { port, .. } => match port.or(Self::current_port(&current.attributes)) {
                    Some(port) => Some(port),
                    None => Some(self.ports.allocate(None).await?),
                },
                Nic::Network(_) => None,
            };
            // The new definition first: libvirt checks it while the VM still
            // runs, and it takes effect at the next start.
            self.libvirt
                .define(xml::domain(
                    &spec,
                    &self.layout(name),
                    &meta,
                    port,
                    Some(&info.uuid),
                ))
                .await?;
            self.libvirt.set_autostart(name, spec.autostart).await?;
            self.shut_down(name).await?;
            if rekey {
                self.replace_seed(request.address, name, &spec, &meta)
                    .await?;
            }
            self.start_and_wait(name, &spec, port).await?;
        } else {
            self.libvirt.set_autostart(name, spec.autostart).await?;
            let stopped = current.attributes.get(attrs::RUNNING) == Some(&Value::Bool(false));
            if stopped {
                let port = Self::current_port(&current.attributes);
                self.start_and_wait(name, &spec, port).await?;
            }
        }
        self.observe(name).await?.ok_or_else(not_found)
    }

    async fn delete(&self, kind: &str, id: &str) -> Result<(), ProviderError> {
        Self::check_kind(kind)?;
        let started = Instant::now();
        self.remove(id).await?;
        tracing::debug!(id, elapsed = ?started.elapsed(), "VM deleted");
        Ok(())
    }
}

/// The guest's host name before cleaning: `web-0` for `web[0]`.
fn host_name(address: &prov_provider::Address) -> String {
    match address.index {
        Some(i) => format!("{}-{i}", address.name),
        None => address.name.clone(),
    }
}
