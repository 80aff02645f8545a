//! Making and removing a VM: the checks of the machine, the cloud-init seed
//! volume, the overlay on the base image, the domain definition and first
//! boot; and removing a domain with its volumes.

use std::collections::BTreeSet;
use std::path::Path;

use prov_provider::cloud_init as seed;
use prov_provider::machine::{self, HostKey};
use prov_provider::{CreateRequest, Observed, ProviderError};

use crate::attrs::{Boot, VmSpec};
use crate::error::missing;
use crate::image;
use crate::provider::LibvirtProvider;
use crate::xml::{self, Layout, Meta};

impl LibvirtProvider {
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

    /// Removes domain `name` and its overlay and seed volumes, wherever they
    /// are; what is already gone is fine. The base image stays.
    pub(crate) async fn remove(&self, name: &str) -> Result<(), ProviderError> {
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
    pub(crate) async fn replace_seed(
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
            &seed::hostname(&machine::host_name(address)),
            &spec.authorized_keys,
        )
        .image()?;
        self.libvirt.delete_volume(&spec.pool, &layout.seed).await?;
        self.write_seed(&spec.pool, &layout, seed).await
    }

    /// Creates the seed volume of `layout` in `pool` and uploads `image`
    /// into it.
    async fn write_seed(
        &self,
        pool: &str,
        layout: &Layout,
        image: Vec<u8>,
    ) -> Result<(), ProviderError> {
        let length = image.len() as u64;
        self.libvirt
            .create_volume(pool, xml::volume(&layout.seed, length, "raw", None))
            .await?;
        self.libvirt
            .upload(
                pool,
                &layout.seed,
                length,
                Box::new(std::io::Cursor::new(image)),
            )
            .await
    }

    /// Checks what a VM needs from the machine: the pool, and the kernel
    /// and initrd files when libvirtd runs here.
    pub(crate) async fn check_machine(&self, spec: &VmSpec) -> Result<(), ProviderError> {
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
    pub(crate) async fn build(
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
        let host = machine::host_name(request.address);
        let seed = seed::seed(
            &format!("prov-{}", request.token),
            &seed::hostname(&host),
            key,
            &spec.authorized_keys,
        )
        .image()?;
        self.write_seed(&spec.pool, &layout, seed).await?;
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
}
