//! The provider registry: the providers a run needs, built from the spec's
//! settings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use prov_provider::Provider;
use prov_provider_ec2::Ec2Provider;

use crate::spec::Spec;

/// Providers by name.
#[derive(Debug, Default, Clone)]
pub struct Providers {
    map: BTreeMap<String, Arc<dyn Provider>>,
    ec2: Option<Arc<Ec2Provider>>,
}

impl Providers {
    /// Builds every provider in `needed` (the providers the spec's resources and
    /// the state's records use). A provider used only by state (its resources
    /// were removed from the spec) falls back to default settings, so a
    /// deployment can still be destroyed.
    ///
    /// # Errors
    /// When a provider cannot be configured, or is unknown.
    pub async fn for_spec(spec: &Spec, needed: &BTreeSet<String>) -> Result<Self> {
        let mut providers = Self::default();
        for name in needed {
            match name.as_str() {
                "ec2" => {
                    let settings = spec.providers.ec2.clone().unwrap_or_default();
                    let ec2 = Ec2Provider::new(&prov_provider_ec2::Ec2Settings {
                        region: settings.region,
                        endpoint: settings.endpoint,
                        profile: settings.profile,
                    })
                    .await
                    .context("setting up the ec2 provider")?;
                    let ec2 = Arc::new(ec2);
                    providers.ec2 = Some(Arc::clone(&ec2));
                    providers.map.insert(name.clone(), ec2);
                }
                "local" => {
                    let mut settings =
                        prov_provider_local::LocalSettings::new(spec.deployment.clone());
                    // PROV_LOCAL_ROOT (tests, CI isolation) over the spec's root.
                    let root = std::env::var_os("PROV_LOCAL_ROOT")
                        .map(std::path::PathBuf::from)
                        .or_else(|| spec.providers.local.as_ref().and_then(|l| l.root.clone()));
                    if let Some(root) = root {
                        settings.root = root;
                    }
                    let local = prov_provider_local::LocalProvider::new(settings)
                        .context("setting up the local provider")?;
                    providers.map.insert(name.clone(), Arc::new(local));
                }
                "virtualbox" => {
                    let mut settings =
                        prov_provider_virtualbox::VirtualBoxSettings::new(spec.deployment.clone());
                    settings.vboxmanage = spec
                        .providers
                        .virtualbox
                        .as_ref()
                        .and_then(|v| v.vboxmanage.clone());
                    let vbox = prov_provider_virtualbox::VirtualBoxProvider::new(&settings)
                        .context("setting up the virtualbox provider")?;
                    providers.map.insert(name.clone(), Arc::new(vbox));
                }
                "libvirt" => {
                    providers.map.insert(name.clone(), libvirt(spec).await?);
                }
                other => anyhow::bail!("state refers to an unknown provider `{other}`"),
            }
        }
        Ok(providers)
    }

    /// A registry holding exactly `provider` (tests, benchmarks).
    #[must_use]
    pub fn single(provider: Arc<dyn Provider>) -> Self {
        let mut map = BTreeMap::new();
        map.insert(provider.name().to_owned(), provider);
        Self { map, ec2: None }
    }

    /// The provider called `name`.
    ///
    /// # Errors
    /// When the spec configures no such provider.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn Provider>> {
        self.map.get(name).with_context(|| {
            format!("no `{name}` provider is configured (add [providers.{name}] to the spec)")
        })
    }

    /// Logs how many API calls each provider made (for benchmarks and
    /// debugging: `PROV_LOG=prov=info`).
    pub fn log_api_calls(&self) {
        if let Some(ec2) = &self.ec2 {
            tracing::info!(calls = ec2.api_calls(), "ec2 API calls");
        }
    }
}

/// The libvirt provider with the spec's settings.
#[cfg(feature = "libvirt")]
async fn libvirt(spec: &Spec) -> Result<Arc<dyn Provider>> {
    let mut settings = prov_provider_libvirt::LibvirtSettings::new(spec.deployment.clone());
    if let Some(configured) = &spec.providers.libvirt {
        settings.uri.clone_from(&configured.uri);
        if let Some(t) = configured.boot_timeout {
            settings.boot_timeout = t;
        }
        if let Some(t) = configured.shutdown_timeout {
            settings.shutdown_timeout = t;
        }
    }
    let provider = prov_provider_libvirt::LibvirtProvider::connect(settings)
        .await
        .context("setting up the libvirt provider")?;
    Ok(Arc::new(provider))
}

/// Without the `libvirt` feature there is no libvirt provider.
#[cfg(not(feature = "libvirt"))]
async fn libvirt(_spec: &Spec) -> Result<Arc<dyn Provider>> {
    anyhow::bail!("this prov was built without libvirt support: rebuild with the `libvirt` cargo feature (on by default; needs libvirt's development files)")
}
