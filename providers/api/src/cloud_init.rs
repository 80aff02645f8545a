//! The cloud-init NoCloud seed that hands a new VM its identity (used by
//! the libvirt and VirtualBox providers): the SSH
//! host key prov generated (so the key is pinned before the first
//! connection), the keys that may log in as root, and its hostname.
//!
//! `user-data` and `meta-data` are written as JSON, which is YAML, so no
//! value ever needs YAML quoting rules.

use crate::machine::HostKey;
use crate::ProviderError;
use serde_json::json;

use crate::iso::{self, IsoFile};

/// The volume label cloud-init looks for.
const LABEL: &str = "cidata";

/// The seed's two files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub user_data: String,
    pub meta_data: String,
}

/// The seed of a VM: `instance_id` changes with every create, so cloud-init
/// runs its per-instance steps (host keys, authorized keys) exactly once.
pub fn seed(instance_id: &str, hostname: &str, key: &HostKey, authorized_keys: &[String]) -> Seed {
    build(instance_id, hostname, Some(key), authorized_keys)
}

/// The seed that gives a running VM new authorized keys at its next boot:
/// a new `instance_id` makes cloud-init run its per-instance steps again,
/// which add the keys (keys already authorized stay). It carries no host
/// key and tells cloud-init to keep the ones the VM has, so the host key
/// prov pinned stays valid.
pub fn reseed(instance_id: &str, hostname: &str, authorized_keys: &[String]) -> Seed {
    build(instance_id, hostname, None, authorized_keys)
}

/// With `key`, the VM's host keys are replaced by it; without, kept.
fn build(
    instance_id: &str,
    hostname: &str,
    key: Option<&HostKey>,
    authorized_keys: &[String],
) -> Seed {
    let mut user = json!({
        "disable_root": false,
        "ssh_pwauth": false,
        "ssh_deletekeys": key.is_some(),
        "ssh_genkeytypes": [],
        "ssh_authorized_keys": authorized_keys,
        "preserve_hostname": false,
        "hostname": hostname,
    });
    if let (Some(key), Some(fields)) = (key, user.as_object_mut()) {
        fields.insert(
            "ssh_keys".to_owned(),
            json!({
                "ed25519_private": key.private,
                "ed25519_public": key.public,
            }),
        );
    }
    let meta = json!({
        "instance-id": instance_id,
        "local-hostname": hostname,
    });
    Seed {
        user_data: format!("#cloud-config\n{user:#}\n"),
        meta_data: format!("{meta:#}\n"),
    }
}

impl Seed {
    /// The ISO 9660 image (label `cidata`) holding both files.
    pub fn image(&self) -> Result<Vec<u8>, ProviderError> {
        iso::build(
            LABEL,
            &[
                IsoFile {
                    name: "meta-data",
                    data: self.meta_data.as_bytes(),
                },
                IsoFile {
                    name: "user-data",
                    data: self.user_data.as_bytes(),
                },
            ],
        )
        .map_err(|e| ProviderError::api_caused_by("build the cloud-init seed", "the ISO image", e))
    }
}

/// A hostname for `name` (`web[0]` → `web-0`): letters, digits and `-`.
pub fn hostname(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out = out.trim_matches('-').to_owned();
    out.truncate(63);
    if out.is_empty() {
        "prov".to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_is_cloud_config_and_parses() {
        let key = HostKey {
            private:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
            public: "ssh-ed25519 AAAAhost".into(),
        };
        let s = seed(
            "prov-1",
            "web-0",
            &key,
            &["ssh-ed25519 AAAAdeployer".into()],
        );
        assert!(s.user_data.starts_with("#cloud-config\n"));
        let body: serde_json::Value =
            serde_json::from_str(s.user_data.trim_start_matches("#cloud-config\n")).unwrap();
        assert_eq!(body["ssh_keys"]["ed25519_public"], "ssh-ed25519 AAAAhost");
        assert_eq!(body["ssh_authorized_keys"][0], "ssh-ed25519 AAAAdeployer");
        let meta: serde_json::Value = serde_json::from_str(&s.meta_data).unwrap();
        assert_eq!(meta["instance-id"], "prov-1");
        assert_eq!(hostname("web[0]"), "web-0");
        assert_eq!(hostname("--"), "prov");
    }
}
