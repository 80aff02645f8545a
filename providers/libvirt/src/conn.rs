//! One libvirt connection and the calls prov makes on it. libvirt's API
//! blocks, so every call runs on tokio's blocking pool; a connection is safe
//! to use from several threads at once.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use prov_provider::ProviderError;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virt::sys;

use crate::error::{libvirt_error, missing};
use crate::xml::META_NS;

/// Bytes per chunk of an upload or download.
const CHUNK: usize = 1 << 20;

/// How to start libvirtd, for errors.
pub(crate) const START_HINT: &str = "start libvirtd (`systemctl start libvirtd`; without systemd: `virtlogd -d && libvirtd -d`; prov's tests run scripts/libvirt-setup.sh)";

/// A volume as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolumeInfo {
    pub path: String,
    pub capacity: u64,
    pub format: String,
}

/// A domain as libvirt reports it.
#[derive(Debug, Clone)]
pub(crate) struct DomainState {
    pub xml: String,
    pub active: bool,
    pub autostart: bool,
}

/// An open connection.
#[derive(Debug, Clone)]
pub(crate) struct Libvirt {
    conn: Arc<Connect>,
    uri: String,
}

fn is(error: &VirtError, number: ErrorNumber) -> bool {
    error.code() == Enum::Known(number)
}

fn worker_failed(e: tokio::task::JoinError) -> ProviderError {
    ProviderError::api_caused_by("libvirt", "a libvirt call did not finish", e)
}

impl Libvirt {
    /// Connects to `uri`.
    ///
    /// # Errors
    /// [`ProviderError::Config`] naming the URI and how to start libvirtd.
    pub(crate) async fn open(uri: &str) -> Result<Self, ProviderError> {
        let target = uri.to_owned();
        let conn = tokio::task::spawn_blocking(move || {
            // libvirt prints every error to stderr by default; prov reports
            // them itself.
            virt::error::clear_error_callback();
            Connect::open(Some(&target))
        })
        .await
        .map_err(worker_failed)?
        .map_err(|e| {
            missing(format!(
                "cannot connect to libvirt at {uri}: {}; is libvirtd running? {START_HINT}",
                e.message()
            ))
        })?;
        Ok(Self {
            conn: Arc::new(conn),
            uri: uri.to_owned(),
        })
    }

    /// The connection's URI as the spec gave it.
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether libvirtd runs on this machine (files named in domain XML are
    /// local files).
    pub(crate) fn is_local(&self) -> bool {
        let scheme_end = self.uri.find("://").map_or(0, |i| i + 3);
        !self.uri.contains('+') && self.uri[scheme_end..].starts_with('/')
    }

    async fn call<T, F>(&self, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, ProviderError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&conn))
            .await
            .map_err(worker_failed)?
    }

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

    /// Checks that pool `name` exists and is active, and refreshes it once
    /// (a create starts here) so volumes copied into it outside libvirt are
    /// seen. A refresh is refused while another client uploads into the
    /// pool, which is harmless.
    pub(crate) async fn check_pool(&self, name: &str) -> Result<(), ProviderError> {
        let (uri, name) = (self.uri.clone(), name.to_owned());
        self.call(move |c| {
            let pool = Self::pool(c, &uri, &name)?;
            if let Err(e) = pool.refresh(0) {
                tracing::debug!(pool = name, error = %e.message(), "pool refresh skipped");
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
        let (uri, pool, name) = (self.uri.clone(), pool.to_owned(), name.to_owned());
        self.call(move |c| {
            let pool = Self::pool(c, &uri, &pool)?;
            Self::lookup_volume(&pool, &name)?
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
        let (uri, pool) = (self.uri.clone(), pool.to_owned());
        self.call(move |c| {
            let pool = Self::pool(c, &uri, &pool)?;
            let vol = StorageVol::create_xml(&pool, &xml, 0)
                .map_err(|e| libvirt_error("volume create", &e))?;
            Self::volume_info(&vol)
        })
        .await
    }

    /// Writes `data` (of `length` bytes) into volume `name` from offset 0.
    pub(crate) async fn upload(
        &self,
        pool: &str,
        name: &str,
        length: u64,
        mut data: Box<dyn Read + Send>,
    ) -> Result<(), ProviderError> {
        let (uri, pool, name) = (self.uri.clone(), pool.to_owned(), name.to_owned());
        self.call(move |c| {
            let pool = Self::pool(c, &uri, &pool)?;
            let vol = Self::lookup_volume(&pool, &name)?.ok_or_else(|| {
                ProviderError::api("libvirt upload", format!("volume {name} vanished"))
            })?;
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
        let (uri, pool, name) = (self.uri.clone(), pool.to_owned(), name.to_owned());
        self.call(move |c| {
            let pool = Self::pool(c, &uri, &pool)?;
            let vol = Self::lookup_volume(&pool, &name)?.ok_or_else(|| {
                ProviderError::api("libvirt download", format!("volume {name} vanished"))
            })?;
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
                Some(vol) => vol
                    .delete(0)
                    .or_else(|e| {
                        if is(&e, ErrorNumber::NoStorageVolume) {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| libvirt_error("volume delete", &e)),
                None => Ok(()),
            }
        })
        .await
    }

    fn lookup_domain(conn: &Connect, name: &str) -> Result<Option<Domain>, ProviderError> {
        match conn.lookup_domain_by_name(name) {
            Ok(domain) => Ok(Some(domain)),
            Err(e) if is(&e, ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(libvirt_error("domain lookup", &e)),
        }
    }

    fn require_domain(conn: &Connect, name: &str) -> Result<Domain, ProviderError> {
        Self::lookup_domain(conn, name)?.ok_or_else(|| ProviderError::NotFound {
            kind: "domain".into(),
            id: name.to_owned(),
        })
    }

    /// Domain `name`; `None` when it is not defined.
    pub(crate) async fn domain(&self, name: &str) -> Result<Option<DomainState>, ProviderError> {
        let name = name.to_owned();
        self.call(move |c| {
            let Some(domain) = Self::lookup_domain(c, &name)? else {
                return Ok(None);
            };
            Ok(Some(DomainState {
                xml: domain
                    .xml_desc(0)
                    .map_err(|e| libvirt_error("domain XML", &e))?,
                active: domain
                    .is_active()
                    .map_err(|e| libvirt_error("domain state", &e))?,
                autostart: domain
                    .autostart()
                    .map_err(|e| libvirt_error("domain autostart", &e))?,
            }))
        })
        .await
    }

    /// The names of every defined domain starting with `prefix`.
    pub(crate) async fn domain_names(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        let prefix = prefix.to_owned();
        self.call(move |c| {
            let domains = c
                .list_all_domains(0)
                .map_err(|e| libvirt_error("domain list", &e))?;
            let mut names = Vec::new();
            for domain in domains {
                let name = domain
                    .name()
                    .map_err(|e| libvirt_error("domain name", &e))?;
                if name.starts_with(&prefix) {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    /// Defines (or redefines) a persistent domain from `xml`.
    pub(crate) async fn define(&self, xml: String) -> Result<(), ProviderError> {
        self.call(move |c| {
            c.define_domain_xml(&xml)
                .map(drop)
                .map_err(|e| libvirt_error("domain define", &e))
        })
        .await
    }

    /// Replaces prov's metadata element of domain `name` (live and config).
    pub(crate) async fn set_meta(&self, name: &str, element: String) -> Result<(), ProviderError> {
        let name = name.to_owned();
        self.call(move |c| {
            let domain = Self::require_domain(c, &name)?;
            let live = domain
                .is_active()
                .map_err(|e| libvirt_error("domain state", &e))?;
            let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
            if live {
                flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
            }
            domain
                .set_metadata(
                    sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                    Some(&element),
                    Some("prov"),
                    Some(META_NS),
                    flags,
                )
                .map_err(|e| libvirt_error("domain metadata", &e))
        })
        .await
    }

    /// Starts domain `name`.
    pub(crate) async fn start(&self, name: &str) -> Result<(), ProviderError> {
        let name = name.to_owned();
        self.call(move |c| {
            Self::require_domain(c, &name)?
                .create()
                .map(drop)
                .map_err(|e| libvirt_error("domain start", &e))
        })
        .await
    }

    /// Asks domain `name` to shut down (ACPI power button).
    pub(crate) async fn shutdown(&self, name: &str) -> Result<(), ProviderError> {
        let name = name.to_owned();
        self.call(move |c| match Self::lookup_domain(c, &name)? {
            Some(domain) if domain.is_active().unwrap_or(false) => domain
                .shutdown()
                .map(drop)
                .map_err(|e| libvirt_error("domain shutdown", &e)),
            _ => Ok(()),
        })
        .await
    }

    /// Powers domain `name` off at once; one that is not running (or not
    /// defined) is fine.
    pub(crate) async fn destroy(&self, name: &str) -> Result<(), ProviderError> {
        let name = name.to_owned();
        self.call(move |c| {
            let Some(domain) = Self::lookup_domain(c, &name)? else {
                return Ok(());
            };
            match domain.destroy() {
                Ok(()) => Ok(()),
                Err(e) if is(&e, ErrorNumber::OperationInvalid) => Ok(()),
                Err(e) => Err(libvirt_error("domain destroy", &e)),
            }
        })
        .await
    }

    /// Removes domain `name`'s definition (and its NVRAM); one that is not
    /// defined is fine.
    pub(crate) async fn undefine(&self, name: &str) -> Result<(), ProviderError> {
        let name = name.to_owned();
        self.call(move |c| {
            let Some(domain) = Self::lookup_domain(c, &name)? else {
                return Ok(());
            };
            let flags = sys::VIR_DOMAIN_UNDEFINE_NVRAM | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE;
            domain
                .undefine_flags(flags)
                .or_else(|_| domain.undefine())
                .or_else(|e| {
                    if is(&e, ErrorNumber::NoDomain) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| libvirt_error("domain undefine", &e))
        })
        .await
    }

    /// Sets whether domain `name` starts with libvirtd.
    pub(crate) async fn set_autostart(&self, name: &str, on: bool) -> Result<(), ProviderError> {
        let name = name.to_owned();
        self.call(move |c| {
            Self::require_domain(c, &name)?
                .set_autostart(on)
                .map(drop)
                .map_err(|e| libvirt_error("domain autostart", &e))
        })
        .await
    }

    /// The IPv4 addresses the network's DHCP server leased to domain `name`.
    pub(crate) async fn leased_addresses(&self, name: &str) -> Result<Vec<IpAddr>, ProviderError> {
        let name = name.to_owned();
        self.call(move |c| {
            let domain = Self::require_domain(c, &name)?;
            let interfaces = domain
                .interface_addresses(sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
                .map_err(|e| libvirt_error("domain addresses", &e))?;
            Ok(interfaces
                .iter()
                .flat_map(|i| i.addrs.iter())
                .filter_map(|a| a.addr.parse::<IpAddr>().ok())
                .filter(IpAddr::is_ipv4)
                .collect())
        })
        .await
    }

    /// The directory serial console logs go to.
    pub(crate) fn console_log_dir(&self) -> PathBuf {
        if self.uri.contains("/session") {
            let home =
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
            home.join(".cache/libvirt/qemu/log")
        } else {
            PathBuf::from("/var/log/libvirt/qemu")
        }
    }
}
