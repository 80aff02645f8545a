//! The providers: the table of host targets ([`Target`]) and the set of
//! providers a run needs ([`Providers`]), built from the spec's settings.

mod target;

pub use target::{ProviderSettings, Target};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use prov_provider::Provider;
#[cfg(feature = "ec2")]
use prov_provider_ec2::Ec2Provider;

use crate::spec::Spec;

/// Environment variable naming the local provider's root; it wins over the
/// spec's `[providers.local] root` (tests, CI isolation).
const ENV_LOCAL_ROOT: &str = "PROV_LOCAL_ROOT";

/// The local provider's root `PROV_LOCAL_ROOT` sets, which wins over the
/// spec's.
#[must_use]
pub fn local_root_override() -> Option<std::path::PathBuf> {
    std::env::var_os(ENV_LOCAL_ROOT)
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

/// Providers by name.
#[derive(Debug, Default, Clone)]
pub struct Providers {
    map: BTreeMap<String, Arc<dyn Provider>>,
    /// The EC2 provider again, for its API call count.
    #[cfg(feature = "ec2")]
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
            let Some(target) = Target::from_provider(name) else {
                anyhow::bail!("state refers to an unknown provider `{name}`");
            };
            let provider = providers.build(target, spec).await?;
            providers.map.insert(name.clone(), provider);
        }
        Ok(providers)
    }

    /// The provider of `target`, with the spec's settings.
    async fn build(&mut self, target: Target, spec: &Spec) -> Result<Arc<dyn Provider>> {
        // In an environment, objects are named for it (`DEPLOYMENT-ENV`).
        let naming = spec.naming();
        let deployment = naming.as_str();
        let settings = &spec.providers;
        Ok(match target {
            Target::Ec2 => self.ec2(settings).await?,
            Target::Local => {
                let mut local = settings.local.clone().unwrap_or_default();
                if let Some(root) = local_root_override() {
                    local.root = root;
                }
                let provider = prov_provider_local::LocalProvider::new(deployment, &local)
                    .context("setting up the local provider")?;
                Arc::new(provider)
            }
            Target::VirtualBox => {
                let vbox = settings.virtualbox.clone().unwrap_or_default();
                let provider = prov_provider_virtualbox::VirtualBoxProvider::new(deployment, &vbox)
                    .context("setting up the virtualbox provider")?;
                Arc::new(provider)
            }
            Target::Libvirt => libvirt(deployment, settings).await?,
            Target::Ssh => anyhow::bail!("hosts of target `{target}` have no provider"),
        })
    }

    /// The EC2 provider with the spec's settings, kept for its call count.
    #[cfg(feature = "ec2")]
    async fn ec2(&mut self, settings: &ProviderSettings) -> Result<Arc<dyn Provider>> {
        let ec2 = Ec2Provider::new(&settings.ec2.clone().unwrap_or_default())
            .await
            .context("setting up the ec2 provider")?;
        let ec2 = Arc::new(ec2);
        self.ec2 = Some(Arc::clone(&ec2));
        Ok(ec2)
    }

    /// Without the `ec2` feature there is no EC2 provider.
    #[cfg(not(feature = "ec2"))]
    #[allow(clippy::unused_async)]
    async fn ec2(&mut self, _settings: &ProviderSettings) -> Result<Arc<dyn Provider>> {
        anyhow::bail!(not_built(Target::Ec2))
    }

    /// A registry holding exactly `provider` (tests, benchmarks).
    #[must_use]
    pub fn single(provider: Arc<dyn Provider>) -> Self {
        let mut providers = Self::default();
        providers.map.insert(provider.name().to_owned(), provider);
        providers
    }

    /// The names of the providers built.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
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
        #[cfg(feature = "ec2")]
        if let Some(ec2) = &self.ec2 {
            tracing::info!(calls = ec2.api_calls(), "ec2 API calls");
        }
    }
}

/// The libvirt provider with the spec's settings.
#[cfg(feature = "libvirt")]
async fn libvirt(deployment: &str, settings: &ProviderSettings) -> Result<Arc<dyn Provider>> {
    let libvirt = settings.libvirt.clone().unwrap_or_default();
    let provider = prov_provider_libvirt::LibvirtProvider::connect(deployment, &libvirt)
        .await
        .context("setting up the libvirt provider")?;
    Ok(Arc::new(provider))
}

/// Without the `libvirt` feature there is no libvirt provider.
#[cfg(not(feature = "libvirt"))]
#[allow(clippy::unused_async)]
async fn libvirt(_deployment: &str, _settings: &ProviderSettings) -> Result<Arc<dyn Provider>> {
    anyhow::bail!(not_built(Target::Libvirt))
}

/// Why a provider left out of this build cannot be used (its cargo feature
/// is named like the target).
#[cfg_attr(all(feature = "ec2", feature = "libvirt"), allow(dead_code))]
fn not_built(target: Target) -> String {
    let needs = match target {
        Target::Libvirt => "; needs libvirt's development files",
        _ => "",
    };
    format!("this prov was built without {target} support: rebuild with the `{target}` cargo feature (on by default{needs})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_left_out_of_the_build_names_its_feature() {
        assert_eq!(
            not_built(Target::Libvirt),
            "this prov was built without libvirt support: rebuild with the `libvirt` cargo feature (on by default; needs libvirt's development files)"
        );
        assert_eq!(
            not_built(Target::Ec2),
            "this prov was built without ec2 support: rebuild with the `ec2` cargo feature (on by default)"
        );
    }
}
