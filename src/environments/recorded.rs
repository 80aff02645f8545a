//! The providers' settings an environment's state records, so that
//! `prov env down` and `prov gc` can destroy it without the spec: what each
//! provider needs to reach what it made (region and endpoint, the local
//! root, the libvirt URI, the VBoxManage program).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::providers::ProviderSettings;

/// The recorded form, one optional table per provider.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recorded {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ec2: Option<Ec2>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<Local>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    virtualbox: Option<VirtualBox>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    libvirt: Option<Libvirt>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ec2 {
    region: Option<String>,
    endpoint: Option<String>,
    profile: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Local {
    root: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VirtualBox {
    vboxmanage: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Libvirt {
    uri: String,
    boot_timeout_seconds: Option<u64>,
    shutdown_timeout_seconds: Option<u64>,
}

/// `settings` as an environment's state records them; the local root is
/// the one in effect (`PROV_LOCAL_ROOT` included), made absolute.
///
/// # Errors
/// When the local root cannot be made absolute.
pub fn record(settings: &ProviderSettings, local_root: Option<PathBuf>) -> Result<Value> {
    let local = match local_root.or_else(|| settings.local.as_ref().map(|l| l.root.clone())) {
        Some(root) => Some(Local {
            root: std::path::absolute(&root)
                .with_context(|| format!("resolving {}", root.display()))?,
        }),
        None => None,
    };
    let recorded = Recorded {
        ec2: settings.ec2.as_ref().map(|e| Ec2 {
            region: e.region.clone(),
            endpoint: e.endpoint.clone(),
            profile: e.profile.clone(),
        }),
        local,
        virtualbox: settings.virtualbox.as_ref().map(|v| VirtualBox {
            vboxmanage: v.vboxmanage.clone(),
        }),
        libvirt: settings.libvirt.as_ref().map(|l| Libvirt {
            uri: l.uri.clone(),
            boot_timeout_seconds: l.boot_timeout.map(|d| d.as_secs()),
            shutdown_timeout_seconds: l.shutdown_timeout.map(|d| d.as_secs()),
        }),
    };
    Ok(serde_json::to_value(recorded)?)
}

/// The settings `value` records (nothing recorded: every default).
///
/// # Errors
/// When `value` is not what [`record`] writes.
pub fn restore(value: &Value) -> Result<ProviderSettings> {
    if value.is_null() {
        return Ok(ProviderSettings::default());
    }
    let recorded: Recorded = serde_json::from_value(value.clone())
        .context("the environment's recorded provider settings do not read")?;
    Ok(ProviderSettings {
        ec2: recorded.ec2.map(|e| prov_provider_ec2::Ec2Settings {
            region: e.region,
            endpoint: e.endpoint,
            profile: e.profile,
        }),
        local: recorded
            .local
            .map(|l| prov_provider_local::LocalSettings { root: l.root }),
        virtualbox: recorded
            .virtualbox
            .map(|v| prov_provider_virtualbox::VirtualBoxSettings {
                vboxmanage: v.vboxmanage,
            }),
        libvirt: recorded
            .libvirt
            .map(|l| prov_provider_libvirt::LibvirtSettings {
                uri: l.uri,
                boot_timeout: l.boot_timeout_seconds.map(Duration::from_secs),
                shutdown_timeout: l.shutdown_timeout_seconds.map(Duration::from_secs),
            }),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn settings_round_trip() {
        let settings = ProviderSettings {
            ec2: Some(prov_provider_ec2::Ec2Settings {
                region: Some("us-east-1".into()),
                endpoint: Some("http://127.0.0.1:5000".into()),
                profile: None,
            }),
            local: Some(prov_provider_local::LocalSettings {
                root: "/var/lib/prov/local".into(),
            }),
            virtualbox: Some(prov_provider_virtualbox::VirtualBoxSettings {
                vboxmanage: Some("/opt/vbox".into()),
            }),
            libvirt: Some(prov_provider_libvirt::LibvirtSettings {
                uri: "test:///default".into(),
                boot_timeout: Some(Duration::from_secs(90)),
                shutdown_timeout: None,
            }),
        };
        let value = record(&settings, None).unwrap();
        assert_eq!(restore(&value).unwrap(), settings);
        assert_eq!(restore(&Value::Null).unwrap(), ProviderSettings::default());
        let moved = record(&settings, Some("/tmp/elsewhere".into())).unwrap();
        assert_eq!(
            restore(&moved).unwrap().local.unwrap().root,
            PathBuf::from("/tmp/elsewhere")
        );
    }
}
