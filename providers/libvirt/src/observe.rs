//! Reading a domain back: what libvirt reports of it (its XML, whether it
//! runs, autostart, DHCP leases) in prov's attributes.

use prov_provider::{Attributes, Observed, ProviderError};
use serde_json::Value;

use crate::attrs;
use crate::conn::DomainState;
use crate::provider::LibvirtProvider;
use crate::xml;

impl LibvirtProvider {
    /// Domain `name` as it is now; `None` when it is not defined.
    pub(crate) async fn observe(&self, name: &str) -> Result<Option<Observed>, ProviderError> {
        match self.libvirt.domain(name).await? {
            Some(state) => self.observed(name, &state).await.map(Some),
            None => Ok(None),
        }
    }

    /// Domain `name` in prov's terms, from what libvirt reported of it.
    pub(crate) async fn observed(
        &self,
        name: &str,
        state: &DomainState,
    ) -> Result<Observed, ProviderError> {
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
}
