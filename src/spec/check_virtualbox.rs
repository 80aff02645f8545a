//! `target = "virtualbox"` hosts and `[providers.virtualbox]`: the raw table,
//! checks and conversion to a `virtualbox` `vm` resource.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use prov_provider::{Address, Attributes, NameForm, ResourceConfig};
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::error::{Diagnostic, ErrorKind};
use super::raw::{RawHost, RawSpec, Str};
use crate::providers::Target;
use prov_provider_virtualbox::VirtualBoxSettings;

/// `[providers.virtualbox]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVirtualBox {
    /// The VBoxManage program (default: `VBoxManage` on PATH).
    pub vboxmanage: Option<Str>,
}

/// Checks the VirtualBox keys of host `name`: they belong to target
/// `virtualbox` (and `libvirt`, which checks them itself) only, and the VM a
/// `virtualbox` host becomes must pass the provider's rules.
pub(crate) fn check_host(
    raw: &RawSpec,
    name: &Str,
    host: &RawHost,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) {
    let target = host.target.get_ref().as_str();
    let host_name = name.get_ref();
    if host.target() == Some(Target::Libvirt) {
        // Its own module checks `base`, `cpus` and `memory`.
        return;
    }
    if host.target() != Some(Target::VirtualBox) {
        let only: [(&str, Option<std::ops::Range<usize>>); 3] = [
            ("base", host.base.as_ref().map(Spanned::span)),
            ("cpus", host.cpus.as_ref().map(Spanned::span)),
            ("memory", host.memory.as_ref().map(Spanned::span)),
        ];
        for (field, span) in only {
            if let Some(span) = span {
                diags.push(Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!("`{field}` applies to targets `{}` and `{}` only; host `{host_name}` has target `{target}`", Target::VirtualBox, Target::Libvirt),
                    span,
                ));
            }
        }
        return;
    }
    let address = Address::host(host_name, None);
    let vm = vm(
        raw.deployment.get_ref(),
        address,
        host,
        base_dir,
        BTreeSet::new(),
    );
    let span_of = |attribute: &str| match attribute {
        "base" => host.base.as_ref().map(Spanned::span),
        "cpus" => host.cpus.as_ref().map(Spanned::span),
        "memory" => host.memory.as_ref().map(Spanned::span),
        _ => None,
    };
    super::provider_rules::check(name, host, &vm.attributes, &span_of, &|_| false, diags);
}

/// `[providers.virtualbox]`, with `vboxmanage` resolved against the spec's
/// directory when it is a relative path with a `/`.
pub(crate) fn settings(raw: &RawSpec, base_dir: &Path) -> Option<VirtualBoxSettings> {
    raw.providers
        .virtualbox
        .as_ref()
        .map(|v| VirtualBoxSettings {
            vboxmanage: v.vboxmanage.as_ref().map(|p| {
                let p = p.get_ref();
                if p.contains('/') {
                    base_dir.join(p)
                } else {
                    PathBuf::from(p)
                }
            }),
        })
}

/// The VM of a `virtualbox` host: named `prov-DEPLOYMENT-HOST`; an appliance
/// `base` is made absolute. The core fills `authorized_keys` with the
/// deployer's public key.
pub(crate) fn vm(
    deployment: &str,
    address: Address,
    host: &RawHost,
    base_dir: &Path,
    depends_on: BTreeSet<Address>,
) -> ResourceConfig {
    let mut attributes = Attributes::new();
    attributes.insert(
        "name".into(),
        NameForm::ProvMachine.render(deployment, &address).into(),
    );
    if let Some(base) = &host.base {
        let base = base.get_ref();
        let lower = base.to_ascii_lowercase();
        let value = if lower.ends_with(".ova") || lower.ends_with(".ovf") {
            let joined = base_dir.join(base);
            std::path::absolute(&joined)
                .unwrap_or(joined)
                .to_string_lossy()
                .into_owned()
        } else {
            base.clone()
        };
        attributes.insert("base".into(), value.into());
    }
    let cpus = host.cpus.as_ref().map_or(1, |c| *c.get_ref());
    let memory = host.memory.as_ref().map_or(1024, |m| *m.get_ref());
    attributes.insert("cpus".into(), cpus.into());
    attributes.insert("memory".into(), memory.into());
    attributes.insert("authorized_keys".into(), Value::Array(Vec::new()));
    super::convert::virtual_machine(
        address,
        Target::VirtualBox,
        prov_provider_virtualbox::KIND,
        attributes,
        depends_on,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(text: &str) -> Result<crate::spec::Spec, String> {
        crate::spec::parse_toml(text, Path::new("/s/prov.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn virtualbox_hosts_become_vms() {
        let spec = parse(
            "deployment = \"d\"\n[providers.virtualbox]\nvboxmanage = \"bin/VBoxManage\"\n[hosts.web]\ntarget = \"virtualbox\"\ncount = 2\nbase = \"b.ova\"\nmemory = 2048\n",
        )
        .unwrap();
        let vm = &spec.resources[1];
        assert_eq!(vm.provider, "virtualbox");
        assert_eq!(vm.kind, "vm");
        assert_eq!(vm.attributes["name"], "prov-d-web-1");
        assert_eq!(vm.attributes["base"], "/s/b.ova");
        assert_eq!(vm.attributes["cpus"], 1);
        assert_eq!(vm.attributes["memory"], 2048);
        let settings = spec.providers.virtualbox.unwrap();
        assert_eq!(
            settings.vboxmanage.as_deref(),
            Some(Path::new("/s/bin/VBoxManage"))
        );
    }

    #[test]
    fn virtualbox_keys_belong_to_virtualbox_hosts() {
        let err = parse("deployment = \"d\"\n[hosts.web]\ntarget = \"local\"\nmemory = 2048\n")
            .unwrap_err();
        assert!(
            err.contains("`memory` applies to targets `virtualbox` and `libvirt` only"),
            "{err}"
        );
        let err = parse("deployment = \"d\"\n[hosts.web]\ntarget = \"virtualbox\"\ncpus = 0\n")
            .unwrap_err();
        assert!(err.contains("needs `base`"), "{err}");
        assert!(err.contains("`cpus` must be from 1 to 64"), "{err}");
    }

    /// The VM rules are the provider's (`check_vm`); the spec shows each
    /// problem at the value it comes from.
    #[test]
    fn provider_rules_are_located_at_their_values() {
        let err = crate::spec::parse_toml(
            "deployment = \"d\"\n[hosts.web]\ntarget = \"virtualbox\"\nbase = \"\"\nmemory = 2\n",
            Path::new("/s/prov.toml"),
        )
        .unwrap_err();
        let at: Vec<_> = err
            .diagnostics()
            .iter()
            .map(|d| (d.line, d.col, d.kind))
            .collect();
        use crate::spec::ErrorKind::InvalidValue;
        assert_eq!(at, [(4, 8, InvalidValue), (5, 10, InvalidValue)], "{err}");
        assert!(err
            .to_string()
            .contains("`memory` must be from 4 to 2097152 (got 2)"));
    }
}
