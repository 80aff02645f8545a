//! [`LibvirtProvider`]: the [`Provider`] implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prov_provider::machine::{self, build_or_clean_up, check_in_place};
use prov_provider::{
    AttributeChange, AttributeSchema, Attributes, CreateRequest, Observed, Provider, ProviderError,
    UpdateRequest,
};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::attrs::{self, Nic};
use crate::conn::Libvirt;
use crate::settings::{LibvirtSettings, DEFAULT_BOOT_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT};
use crate::xml;
use crate::{KIND, VM};

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
    pub(crate) bases: Mutex<()>,
}

impl LibvirtProvider {
    /// The kinds this provider manages.
    pub const KINDS: &'static [&'static str] = &[KIND];

    /// The attributes of `kind`, known without a provider (spec checks).
    #[must_use]
    pub fn kind_schema(kind: &str) -> Option<&'static [AttributeSchema]> {
        VM.schema_of(kind)
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
        VM.check_deployment(deployment)?;
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

    /// The name prefix of this deployment's domains: `prov-DEPLOYMENT-`.
    fn prefix(&self) -> String {
        format!("prov-{}-", self.deployment)
    }
}

#[async_trait]
impl Provider for LibvirtProvider {
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
        VM.check(kind)?;
        machine::read_each(ids, |id| self.observe(id)).await
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
        VM.check(request.kind)?;
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
        let build = self.build(&request, &spec, &key, port);
        let clean_up = self.ports.release_after(port, self.remove(&name));
        build_or_clean_up("VM", &name, started, build, clean_up).await
    }

    async fn update(&self, request: UpdateRequest<'_>) -> Result<Observed, ProviderError> {
        VM.check(request.kind)?;
        let name = request.id;
        check_in_place(
            request.changes,
            attrs::changes_in_place,
            "update VM",
            "a VM",
        )?;
        let not_found = || VM.not_found(name);
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
                Nic::User { port, .. } => {
                    let kept = port.or(machine::ssh_port(&current.attributes));
                    Some(self.ports.allocate(kept).await?)
                }
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
                let port = machine::ssh_port(&current.attributes);
                self.start_and_wait(name, &spec, port).await?;
            }
        }
        self.observe(name).await?.ok_or_else(not_found)
    }

    async fn delete(&self, kind: &str, id: &str) -> Result<(), ProviderError> {
        VM.check(kind)?;
        let started = Instant::now();
        self.remove(id).await?;
        tracing::debug!(id, elapsed = ?started.elapsed(), "VM deleted");
        Ok(())
    }
}
