//! The attributes of a local host: schema, parsing and normalisation.

use std::net::Ipv4Addr;

use crate::address;
use crate::error::config_error;
use prov_provider::{Address, AttributeSchema, Attributes, ProviderError};

/// The hostname inside the host's UTS namespace.
pub(crate) const HOSTNAME: &str = "hostname";
/// The loopback address (`127.0.0.N`); allocated when unset.
pub(crate) const ADDRESS: &str = "address";
/// OpenSSH public key lines that may log in as root.
pub(crate) const AUTHORIZED_KEYS: &str = "authorized_keys";
/// Where to connect: the address.
pub(crate) const SSH_HOST: &str = "ssh_host";
/// Where to connect: always 22.
pub(crate) const SSH_PORT: &str = "ssh_port";
/// The public host key, `ssh-ed25519 AAAA…` without comment.
pub(crate) const HOST_KEY: &str = "host_key";
/// The pid of the host's outer process.
pub(crate) const PID: &str = "pid";
/// The host directory.
pub(crate) const ROOT: &str = "root";

/// The attributes of kind `host`.
pub(crate) const SCHEMA: &[AttributeSchema] = &[
    AttributeSchema::force_new(HOSTNAME),
    AttributeSchema::force_new(ADDRESS),
    AttributeSchema::in_place(AUTHORIZED_KEYS),
    AttributeSchema::computed(SSH_HOST),
    AttributeSchema::computed(SSH_PORT),
    AttributeSchema::computed(HOST_KEY),
    AttributeSchema::computed(PID),
    AttributeSchema::computed(ROOT),
];

/// What a create asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostSpec {
    /// The hostname to set.
    pub hostname: String,
    /// The requested address, if any.
    pub address: Option<Ipv4Addr>,
    /// The authorized key lines.
    pub authorized_keys: Vec<String>,
}

fn string<'a>(
    resource: &Address,
    attributes: &'a Attributes,
    name: &str,
) -> Result<Option<&'a str>, ProviderError> {
    prov_provider::optional_string(attributes, name)
        .map_err(|why| config_error(format!("host `{resource}`: `{name}` {why}")))
}

/// Whether `name` is usable as a hostname: 1 to 64 ASCII letters, digits,
/// `-` and `.`, starting with a letter or digit.
fn is_valid_hostname(name: &str) -> bool {
    name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Checks the attributes of a create; the hostname defaults to `default_hostname`.
pub(crate) fn parse_spec(
    resource: &Address,
    attributes: &Attributes,
    default_hostname: &str,
) -> Result<HostSpec, ProviderError> {
    let hostname = string(resource, attributes, HOSTNAME)?
        .unwrap_or(default_hostname)
        .to_owned();
    if !is_valid_hostname(&hostname) {
        return Err(config_error(format!(
            "host `{resource}`: `{hostname}` is not a hostname (1-64 letters, digits, `-`, `.`)"
        )));
    }
    let address = string(resource, attributes, ADDRESS)?
        .map(address::parse)
        .transpose()?;
    Ok(HostSpec {
        hostname,
        address,
        authorized_keys: authorized_keys(resource, attributes)?,
    })
}

/// The `authorized_keys` attribute: trimmed lines, empty ones dropped.
pub(crate) fn authorized_keys(
    resource: &Address,
    attributes: &Attributes,
) -> Result<Vec<String>, ProviderError> {
    prov_provider::authorized_keys(attributes)
        .map_err(|why| config_error(format!("host `{resource}`: `authorized_keys` {why}")))
}

/// The contents of the `authorized_keys` file.
pub(crate) fn authorized_keys_file(keys: &[String]) -> String {
    keys.iter().map(|k| format!("{k}\n")).collect()
}

/// Brings desired attributes into the form `read` reports: an unset hostname
/// or address keeps the current one (both are chosen at create when unset),
/// and key lines are trimmed with empty ones dropped.
pub(crate) fn normalize_desired(desired: &mut Attributes, current: &Attributes) {
    prov_provider::keep_current(desired, current, &[HOSTNAME, ADDRESS]);
    prov_provider::normalize_authorized_keys(desired);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prov_provider::{diff_attributes, Desired};
    use serde_json::{json, Value};

    fn attrs(v: Value) -> Attributes {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn parses_and_defaults() {
        let web = Address::host("web", Some(0));
        let spec = parse_spec(
            &web,
            &attrs(
                json!({"address": "127.0.0.5", "authorized_keys": [" ssh-ed25519 AAAA a ", ""]}),
            ),
            "web-0",
        )
        .unwrap();
        assert_eq!(spec.hostname, "web-0");
        assert_eq!(spec.address, Some(Ipv4Addr::new(127, 0, 0, 5)));
        assert_eq!(spec.authorized_keys, ["ssh-ed25519 AAAA a"]);
        assert_eq!(
            authorized_keys_file(&spec.authorized_keys),
            "ssh-ed25519 AAAA a\n"
        );
        for bad in [
            json!({"hostname": "a b"}),
            json!({"hostname": 3}),
            json!({"address": "192.168.1.1"}),
            json!({"authorized_keys": "ssh-ed25519 AAAA"}),
            json!({"authorized_keys": ["a\nb"]}),
        ] {
            assert!(
                parse_spec(&web, &attrs(bad.clone()), "web-0").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn allocated_address_does_not_force_replacement() {
        let current = attrs(json!({
            "hostname": "web-0", "address": "127.0.0.2", "authorized_keys": ["k1"],
            "ssh_host": "127.0.0.2", "ssh_port": 22, "pid": 7,
        }));
        let mut desired = Desired {
            attributes: attrs(json!({"hostname": "web-0", "authorized_keys": ["k1 ", ""]})),
            unknown: Default::default(),
        };
        normalize_desired(&mut desired.attributes, &current);
        assert!(diff_attributes(SCHEMA, &desired, &current).is_empty());
        desired
            .attributes
            .insert(AUTHORIZED_KEYS.into(), json!(["k2"]));
        let changes = diff_attributes(SCHEMA, &desired, &current);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].forces_replacement);
    }
}
