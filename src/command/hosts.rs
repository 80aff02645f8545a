//! Naming hosts on the command line: `--on` for the commands that work on
//! hosts (`exec`, `build`, `upload-secrets`), and one host by address or
//! machine name (`prov ssh web-0`).

use anyhow::{bail, Result};
use prov_provider::Address;

use crate::select::Selection;
use crate::spec::{HostInfo, Spec};

/// The spec's hosts that `on` selects (every host when empty), in address
/// order.
///
/// # Errors
/// When a pattern is malformed or matches no host.
pub fn selected<'a>(spec: &'a Spec, on: &[String]) -> Result<Vec<(&'a Address, &'a HostInfo)>> {
    let selection = Selection::parse(on)?;
    let candidates: Vec<(&Address, _)> = spec
        .hosts
        .iter()
        .map(|(address, info)| (address, info.tags.clone()))
        .collect();
    let unmatched = selection.unmatched(&candidates);
    if !unmatched.is_empty() {
        bail!(
            "`--on {}` matches no host of the spec (by name, address or tag)",
            unmatched.join(",")
        );
    }
    Ok(spec
        .hosts
        .iter()
        .filter(|(address, info)| selection.matches(address, &info.tags))
        .map(|(address, info)| (address, &**info))
        .collect())
}

/// The host `text` names: its address (`web[0]`, `db`) or its machine name
/// (`web-0`, the hostname a counted host gets).
///
/// # Errors
/// When no host of the spec has that address or name.
pub fn named<'a>(spec: &'a Spec, text: &str) -> Result<(&'a Address, &'a HostInfo)> {
    if let Ok(address) = text.parse::<Address>() {
        if let Some((address, info)) = spec.hosts.get_key_value(&address) {
            return Ok((address, info));
        }
    }
    let by_machine_name = spec
        .hosts
        .iter()
        .find(|(address, _)| address.machine_name() == text);
    match by_machine_name {
        Some((address, info)) => Ok((address, info)),
        None => {
            let names: Vec<String> = spec.hosts.keys().map(ToString::to_string).collect();
            bail!(
                "no host of the spec is called `{text}` (hosts: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec() -> Spec {
        crate::spec::parse_toml(
            "deployment = \"d\"\n[hosts.web]\ntarget = \"local\"\ncount = 2\ntags = { role = \"web\" }\n[hosts.db]\ntarget = \"local\"\n",
            std::path::Path::new("prov.toml"),
        )
        .unwrap()
    }

    #[test]
    fn a_host_by_address_or_machine_name() {
        let spec = spec();
        assert_eq!(named(&spec, "web[1]").unwrap().0.to_string(), "web[1]");
        assert_eq!(named(&spec, "web-1").unwrap().0.to_string(), "web[1]");
        assert_eq!(named(&spec, "db").unwrap().0.to_string(), "db");
        let error = named(&spec, "web-7").unwrap_err().to_string();
        assert!(error.contains("hosts: db, web[0], web[1]"), "{error}");
    }

    #[test]
    fn on_selects_hosts_and_a_pattern_matching_none_is_an_error() {
        let spec = spec();
        let names = |on: &[&str]| -> Vec<String> {
            let on: Vec<String> = on.iter().map(|s| (*s).to_owned()).collect();
            selected(&spec, &on)
                .unwrap()
                .iter()
                .map(|(a, _)| a.to_string())
                .collect()
        };
        assert_eq!(names(&["@role=web"]), ["web[0]", "web[1]"]);
        assert_eq!(names(&[]), ["db", "web[0]", "web[1]"]);
        assert!(selected(&spec, &["@role=db".to_owned()]).is_err());
    }
}
