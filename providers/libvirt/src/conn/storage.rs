//! Storage pools and volumes: checking a pool, creating, uploading,
//! downloading and deleting volumes.

use std::io::Read;

use prov_provider::ProviderError;
use virt::connect::Connect;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virt::sys;

use super::{is, unless, Libvirt};
use crate::error::{libvirt_error, missing};

/// Bytes per chunk of an upload or download.
const CHUNK: usize = 1 << 20;

/// A volume as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolumeInfo {
    pub path: String,
    pub capacity: u64,
    pub format: String,
}

impl Libvirt {
    /// The active pool `name`; errors say how to make one.
    fn pool(conn: &Connect, uri: &str, name: &str) -> Result<StoragePool, ProviderError> {
        let pool = conn.lookup_storage_pool_by_name(name).map_err(|e| {
            if is(&e, ErrorNumber::NoStoragePool) {
                missing(format!(
                    "storage pool `{name}` does not exist on {uri}; create it (`virsh -c {uri} pool-define-as {name} dir --target /var/lib/libvirt/images/{name} && virsh -c {uri} pool-build {name} && virsh -c {uri} pool-start {name} && virsh -c {uri} pool-autostart {name}`) or name an existing one with `pool` (`virsh -c {uri} pool-list --all`)"
                ))
            } else {
                libvirt_error("pool lookup", &e)
            }
        })?;
        if !pool
            .is_active()
            .map_err(|e| libvirt_error("pool state", &e))?
        {
            return Err(missing(format!(
                "storage pool `{name}` on {uri} is not active: `virsh -c {uri} pool-start {name}`"
            )));
        }
        Ok(pool)
    }

    /// Runs `f` on the active pool `name` (errors say how to make one).
    async fn with_pool<T, F>(&self, name: &str, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect, &StoragePool) -> Result<T, ProviderError> + Send + 'static,
    {
        let (uri, name) = (self.uri.clone(), name.to_owned());
        self.call(move |c| f(c, &Self::pool(c, &uri, &name)?)).await
    }

    /// Checks that pool `name` exists and is active, and refreshes it once
    /// (a create starts here) so volumes copied into it outside libvirt are
    /// seen. A refresh is refused while another client uploads into the
    /// pool, which is harmless.
    pub(crate) async fn check_pool(&self, name: &str) -> Result<(), ProviderError> {
        let pool_name = name.to_owned();
        self.with_pool(name, move |_, pool| {
            if let Err(e) = pool.refresh(0) {
                tracing::debug!(pool = pool_name, error = %e.message(), "pool refresh skipped");
            }
            Ok(())
        })
        .await
    }

    fn lookup_volume(pool: &StoragePool, name: &str) -> Result<Option<StorageVol>, ProviderError> {
        match pool.lookup_storage_vol_by_name(name) {
            Ok(vol) => Ok(Some(vol)),
            Err(e) if is(&e, ErrorNumber::NoStorageVolume) => Ok(None),
            Err(e) => Err(libvirt_error("volume lookup", &e)),
        }
    }

    fn volume_info(vol: &StorageVol) -> Result<VolumeInfo, ProviderError> {
        let path = vol.path().map_err(|e| libvirt_error("volume path", &e))?;
        let info = vol.info().map_err(|e| libvirt_error("volume info", &e))?;
        let xml = vol
            .xml_desc(0)
            .map_err(|e| libvirt_error("volume XML", &e))?;
        let format = roxmltree::Document::parse(&xml)
            .ok()
            .and_then(|doc| {
                doc.descendants()
                    .find(|n| {
                        n.has_tag_name("format")
                            && n.parent().is_some_and(|p| p.has_tag_name("target"))
                    })
                    .and_then(|n| n.attribute("type").map(str::to_owned))
            })
            .unwrap_or_else(|| "raw".to_owned());
        Ok(VolumeInfo {
            path,
            capacity: info.capacity,
            format,
        })
    }

    /// Volume `name` of `pool`; `None` when it does not exist.
    pub(crate) async fn volume(
        &self,
        pool: &str,
        name: &str,
    ) -> Result<Option<VolumeInfo>, ProviderError> {
        let name = name.to_owned();
        self.with_pool(pool, move |_, pool| {
            Self::lookup_volume(pool, &name)?
                .map(|v| Self::volume_info(&v))
                .transpose()
        })
        .await
    }

    /// Creates a volume from `xml` in `pool`.
    pub(crate) async fn create_volume(
        &self,
        pool: &str,
        xml: String,
    ) -> Result<VolumeInfo, ProviderError> {
        self.with_pool(pool, move |_, pool| {
            let vol = StorageVol::create_xml(pool, &xml, 0)
                .map_err(|e| libvirt_error("volume create", &e))?;
            Self::volume_info(&vol)
        })
        .await
    }

    /// Volume `name` of `pool`, which must exist (`operation` names the
    /// call for the error).
    fn require_volume(
        pool: &StoragePool,
        name: &str,
        operation: &str,
    ) -> Result<StorageVol, ProviderError> {
        Self::lookup_volume(pool, name)?
            .ok_or_else(|| ProviderError::api(operation, format!("volume {name} vanished")))
    }

    /// Writes `data` (of `length` bytes) into volume `name` from offset 0.
    pub(crate) async fn upload(
        &self,
        pool: &str,
        name: &str,
        length: u64,
        mut data: Box<dyn Read + Send>,
    ) -> Result<(), ProviderError> {
        let name = name.to_owned();
        self.with_pool(pool, move |c, pool| {
            let vol = Self::require_volume(pool, &name, "libvirt upload")?;
            let stream = Stream::new(c, 0).map_err(|e| libvirt_error("stream", &e))?;
            vol.upload(&stream, 0, length, 0)
                .map_err(|e| libvirt_error("volume upload", &e))?;
            let mut buffer = vec![0_u8; CHUNK];
            let mut sent = 0_u64;
            while sent < length {
                let n = match data.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = stream.abort();
                        return Err(ProviderError::api_caused_by("upload", "reading", e));
                    }
                };
                let mut chunk = buffer.get(..n).unwrap_or_default();
                while !chunk.is_empty() {
                    let done = stream
                        .send(chunk)
                        .map_err(|e| libvirt_error("volume upload", &e))?;
                    let done = usize::try_from(done).unwrap_or(0).min(chunk.len());
                    chunk = chunk.get(done..).unwrap_or_default();
                }
                sent += n as u64;
            }
            if sent != length {
                let _ = stream.abort();
                return Err(ProviderError::api(
                    "upload",
                    format!("the source ended after {sent} of {length} bytes"),
                ));
            }
            stream
                .finish()
                .map_err(|e| libvirt_error("volume upload", &e))
        })
        .await
    }

    /// Reads `length` bytes of volume `name` from `offset`.
    pub(crate) async fn download(
        &self,
        pool: &str,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, ProviderError> {
        let name = name.to_owned();
        self.with_pool(pool, move |c, pool| {
            let vol = Self::require_volume(pool, &name, "libvirt download")?;
            let stream = Stream::new(c, 0).map_err(|e| libvirt_error("stream", &e))?;
            vol.download(&stream, offset, length, 0)
                .map_err(|e| libvirt_error("volume download", &e))?;
            let mut out = Vec::new();
            let mut buffer = vec![0_u8; CHUNK];
            loop {
                let n = stream
                    .recv(&mut buffer)
                    .map_err(|e| libvirt_error("volume download", &e))?;
                let n = usize::try_from(n).unwrap_or(0);
                if n == 0 || out.len() as u64 >= length {
                    break;
                }
                out.extend_from_slice(buffer.get(..n).unwrap_or_default());
            }
            stream
                .finish()
                .map_err(|e| libvirt_error("volume download", &e))?;
            Ok(out)
        })
        .await
    }

    /// The names of every active pool.
    pub(crate) async fn active_pools(&self) -> Result<Vec<String>, ProviderError> {
        self.call(|c| {
            let pools = c
                .list_all_storage_pools(sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
                .map_err(|e| libvirt_error("pool list", &e))?;
            pools
                .iter()
                .map(|p| p.name().map_err(|e| libvirt_error("pool name", &e)))
                .collect()
        })
        .await
    }

    /// Deletes volume `name`; one that does not exist (or a pool that does
    /// not) is fine.
    pub(crate) async fn delete_volume(&self, pool: &str, name: &str) -> Result<(), ProviderError> {
        let (pool_name, name) = (pool.to_owned(), name.to_owned());
        self.call(move |c| {
            let pool = match c.lookup_storage_pool_by_name(&pool_name) {
                Ok(pool) => pool,
                Err(e) if is(&e, ErrorNumber::NoStoragePool) => return Ok(()),
                Err(e) => return Err(libvirt_error("pool lookup", &e)),
            };
            match Self::lookup_volume(&pool, &name)? {
                Some(vol) => unless(vol.delete(0), ErrorNumber::NoStorageVolume)
                    .map_err(|e| libvirt_error("volume delete", &e)),
                None => Ok(()),
            }
        })
        .await
    }
}
