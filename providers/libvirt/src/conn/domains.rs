//! Domains: looking them up, defining, starting, shutting down, destroying
//! and undefining them, their metadata, autostart and DHCP leases.

use std::net::IpAddr;

use prov_provider::ProviderError;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

use super::{is, unless, Libvirt};
use crate::error::libvirt_error;
use crate::xml::META_NS;

/// A domain as libvirt reports it.
#[derive(Debug, Clone)]
pub(crate) struct DomainState {
    pub xml: String,
    pub active: bool,
    pub autostart: bool,
}

impl Libvirt {
    fn lookup_domain(conn: &Connect, name: &str) -> Result<Option<Domain>, ProviderError> {
        match conn.lookup_domain_by_name(name) {
            Ok(domain) => Ok(Some(domain)),
            Err(e) if is(&e, ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(libvirt_error("domain lookup", &e)),
        }
    }

    /// Runs `f` on domain `name`, or on `None` when it is not defined.
    async fn with_domain<T, F>(&self, name: &str, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(Option<Domain>) -> Result<T, ProviderError> + Send + 'static,
    {
        let name = name.to_owned();
        self.call(move |c| f(Self::lookup_domain(c, &name)?)).await
    }

    /// Runs `f` on domain `name`, which must be defined.
    async fn with_defined_domain<T, F>(&self, name: &str, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(Domain) -> Result<T, ProviderError> + Send + 'static,
    {
        let id = name.to_owned();
        self.with_domain(name, move |domain| {
            f(domain.ok_or_else(|| ProviderError::not_found("domain", &id))?)
        })
        .await
    }

    /// Domain `name`; `None` when it is not defined.
    pub(crate) async fn domain(&self, name: &str) -> Result<Option<DomainState>, ProviderError> {
        self.with_domain(name, |domain| {
            let Some(domain) = domain else {
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
        self.with_defined_domain(name, move |domain| {
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
        self.with_defined_domain(name, |domain| {
            domain
                .create()
                .map(drop)
                .map_err(|e| libvirt_error("domain start", &e))
        })
        .await
    }

    /// Asks domain `name` to shut down (ACPI power button).
    pub(crate) async fn shutdown(&self, name: &str) -> Result<(), ProviderError> {
        self.with_domain(name, |domain| match domain {
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
        self.with_domain(name, |domain| {
            let Some(domain) = domain else {
                return Ok(());
            };
            unless(domain.destroy(), ErrorNumber::OperationInvalid)
                .map_err(|e| libvirt_error("domain destroy", &e))
        })
        .await
    }

    /// Removes domain `name`'s definition (and its NVRAM); one that is not
    /// defined is fine.
    pub(crate) async fn undefine(&self, name: &str) -> Result<(), ProviderError> {
        self.with_domain(name, |domain| {
            let Some(domain) = domain else {
                return Ok(());
            };
            let flags = sys::VIR_DOMAIN_UNDEFINE_NVRAM | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE;
            let undefined = domain.undefine_flags(flags).or_else(|_| domain.undefine());
            unless(undefined, ErrorNumber::NoDomain)
                .map_err(|e| libvirt_error("domain undefine", &e))
        })
        .await
    }

    /// Sets whether domain `name` starts with libvirtd.
    pub(crate) async fn set_autostart(&self, name: &str, on: bool) -> Result<(), ProviderError> {
        self.with_defined_domain(name, move |domain| {
            domain
                .set_autostart(on)
                .map(drop)
                .map_err(|e| libvirt_error("domain autostart", &e))
        })
        .await
    }

    /// The IPv4 addresses the network's DHCP server leased to domain `name`.
    pub(crate) async fn leased_addresses(&self, name: &str) -> Result<Vec<IpAddr>, ProviderError> {
        self.with_defined_domain(name, |domain| {
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
}
