//! Saved plans: `prov plan --out FILE`, then `prov apply FILE`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use prov_provider::{Address, ResourceConfig};
use prov_state::StateDocument;
use serde::{Deserialize, Serialize};

use super::Plan;

/// The marker in the `kind` field of a plan file.
const KIND: &str = "prov-plan";

/// A plan plus the desired configuration of every resource it creates or
/// updates: everything apply needs without reading the spec again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    /// Always `prov-plan`.
    pub kind: String,
    /// The plan.
    pub plan: Plan,
    /// Desired configuration by address, for creates, updates and replacements.
    pub configs: BTreeMap<Address, ResourceConfig>,
    /// The refreshed state the plan was computed against (saved plans only):
    /// apply starts from it, so what refresh saw is what apply acts on. It
    /// never holds the state's key (apply takes the stored one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<StateDocument>,
    /// What binds a saved plan to the stored state it was made from (absent
    /// when no state existed then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
}

/// Binds a saved plan to one version of the state: its digest, and a MAC
/// of the whole file with the state's key (which the file does not hold),
/// so a file edited after `prov plan --out` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// SHA-256 (hex) of the stored state document's JSON.
    pub state_digest: String,
    /// HMAC-SHA256 (hex) with the state's key of the file's JSON with this
    /// field empty.
    pub mac: String,
}

/// The start of an age-encrypted (armored) file.
const AGE_ARMOR: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";

/// Domain separation of the plan MAC from the secrets' keyed hashes.
const MAC_CONTEXT: &[u8] = b"prov saved plan v1\0";

/// SHA-256 (hex) of a state document's JSON.
fn digest(doc: &StateDocument) -> Result<String> {
    use sha2::Digest as _;
    let json = serde_json::to_vec(doc).context("encoding the state")?;
    Ok(hex::encode(sha2::Sha256::digest(&json)))
}

impl PlanFile {
    /// Wraps a plan and its configurations.
    #[must_use]
    pub fn new(plan: Plan, configs: BTreeMap<Address, ResourceConfig>) -> Self {
        Self {
            kind: KIND.to_owned(),
            plan,
            configs,
            prior: None,
            binding: None,
        }
    }

    /// The MAC of this file (its `binding.mac` left out) with `key_hex`,
    /// ready to finalize or verify.
    fn mac(&self, key_hex: &str) -> Result<hmac::Hmac<sha2::Sha256>> {
        use hmac::Mac as _;
        let mut unsigned = self.clone();
        if let Some(binding) = &mut unsigned.binding {
            binding.mac.clear();
        }
        let json = serde_json::to_vec(&unsigned).context("encoding the plan")?;
        let key = zeroize::Zeroizing::new(
            hex::decode(key_hex).context("the state's secret_hmac_key is not hex")?,
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key)
            .map_err(|_| anyhow::anyhow!("invalid HMAC key length"))?;
        mac.update(MAC_CONTEXT);
        mac.update(&json);
        Ok(mac)
    }

    /// Makes this plan, computed against `refreshed` (from `stored`), a file
    /// to save: `refreshed` as its prior without the state's key, the
    /// secrets' HMACs left out (apply checks each secret's file against
    /// `source_sha256` instead), and bound to `stored`.
    ///
    /// # Errors
    /// When `stored` has no key to bind with (a state written by an older
    /// prov: one `prov apply` gives it one).
    pub fn seal(
        &mut self,
        refreshed: &StateDocument,
        stored: Option<&StateDocument>,
    ) -> Result<()> {
        let mut prior = refreshed.clone();
        prior.set_secret_key(None);
        self.prior = Some(prior);
        for change in &mut self.plan.secrets {
            change.hmac = None;
        }
        self.binding = None;
        let Some(stored) = stored else {
            return Ok(());
        };
        let key = stored.secret_hmac_key.as_deref().with_context(|| {
            "the state has no key to bind a saved plan to it (it was written by an older prov); run `prov apply` once, then save the plan again"
        })?;
        self.binding = Some(Binding {
            state_digest: digest(stored)?,
            mac: String::new(),
        });
        let mac = {
            use hmac::Mac as _;
            hex::encode(self.mac(key)?.finalize().into_bytes())
        };
        if let Some(binding) = &mut self.binding {
            binding.mac = mac;
        }
        Ok(())
    }

    /// Checks that this saved plan was made from `stored` exactly and not
    /// edited since (see [`PlanFile::seal`]).
    ///
    /// # Errors
    /// Says which: edited, unbound, or made against another version.
    pub fn verify(&self, stored: Option<&StateDocument>) -> Result<()> {
        let edited = "the saved plan was edited after it was made (its MAC does not match the state it names); refusing it; run `prov plan --out` again";
        match (stored, &self.binding) {
            (None, None) => {
                let untouched = self.prior.as_ref().is_none_or(|p| {
                    p.resources.is_empty() && p.hosts.is_empty() && p.secret_hmac_key.is_none()
                });
                if !untouched {
                    bail!("{edited}");
                }
                Ok(())
            }
            (None, Some(_)) => bail!(
                "the saved plan was made against a state that no longer exists; run `prov plan` again"
            ),
            (Some(_), None) => bail!(
                "the saved plan is not bound to the state (made by an older prov, or edited); run `prov plan --out` again"
            ),
            (Some(stored), Some(binding)) => {
                let key = stored
                    .secret_hmac_key
                    .as_deref()
                    .context("the state has no key to check the saved plan with; run `prov plan --out` again")?;
                if digest(stored)? != binding.state_digest {
                    bail!("the saved plan is stale: the state changed since it was made; run `prov plan` again");
                }
                use hmac::Mac as _;
                let given = hex::decode(&binding.mac).unwrap_or_default();
                // Constant-time comparison (hmac's verify).
                if self.mac(key)?.verify_slice(&given).is_err() {
                    bail!("{edited}");
                }
                Ok(())
            }
        }
    }

    /// Writes the plan to `path` atomically, readable by the owner only, and
    /// encrypted to `encrypt_to` when the state is encrypted (it holds the
    /// refreshed state).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, path: &Path, encrypt_to: &[String]) -> Result<()> {
        let json =
            zeroize::Zeroizing::new(serde_json::to_vec_pretty(self).context("encoding the plan")?);
        if encrypt_to.is_empty() {
            return Ok(write_atomic(path, &json)?);
        }
        let sealed = crate::secrets::encrypt(encrypt_to, &json)
            .context("encrypting the saved plan to [state] encrypt_to")?;
        Ok(write_atomic(path, &sealed)?)
    }

    /// Reads a plan file; an encrypted one is opened with `decrypt`.
    ///
    /// # Errors
    /// When the file is unreadable or not a prov plan of this format.
    pub fn load(
        path: &Path,
        decrypt: impl FnOnce(&[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>>,
    ) -> Result<Self> {
        let bytes = zeroize::Zeroizing::new(fs_err::read(path)?);
        Self::decode(bytes, &path.display().to_string(), decrypt)
    }

    /// Decodes the bytes of a plan file (`what` names it in errors); an
    /// encrypted one is opened with `decrypt`.
    ///
    /// # Errors
    /// When they are not a prov plan of this format.
    pub fn decode(
        mut bytes: zeroize::Zeroizing<Vec<u8>>,
        what: &str,
        decrypt: impl FnOnce(&[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>>,
    ) -> Result<Self> {
        if bytes.starts_with(AGE_ARMOR) {
            bytes = decrypt(&bytes).with_context(|| format!("decrypting the saved plan {what}"))?;
        }
        let file: Self = serde_json::from_slice(&bytes)
            .with_context(|| format!("{what} is not a prov plan file"))?;
        if file.kind != KIND {
            bail!("{what} is not a prov plan file");
        }
        if file.plan.format_version != super::PLAN_FORMAT_VERSION {
            bail!(
                "{what} has plan format {}, this prov reads format {}",
                file.plan.format_version,
                super::PLAN_FORMAT_VERSION
            );
        }
        Ok(file)
    }

    /// Refuses a plan made against another state (lineage) or an older version
    /// of this one (serial).
    ///
    /// # Errors
    /// Says which and how to fix it.
    pub fn check_against(&self, state: Option<&StateDocument>) -> Result<()> {
        let plan = &self.plan;
        match (state, &plan.lineage) {
            (None, None) => Ok(()),
            (None, Some(lineage)) => bail!(
                "the saved plan was made against state lineage {lineage}, but there is no state now; run `prov plan` again"
            ),
            (Some(doc), None) if doc.serial > 0 || !doc.resources.is_empty() => bail!(
                "the saved plan is stale: it was made before any state existed, and state is now at serial {}; run `prov plan` again",
                doc.serial
            ),
            (Some(_), None) => Ok(()),
            (Some(doc), Some(lineage)) if &doc.lineage != lineage => bail!(
                "the saved plan's lineage {lineage} does not match the state's lineage {}: it was made for another deployment",
                doc.lineage
            ),
            (Some(doc), Some(_)) if doc.serial != plan.serial => bail!(
                "the saved plan is stale: it was made against state serial {}, and state is now at serial {}; run `prov plan` again",
                plan.serial,
                doc.serial
            ),
            (Some(_), Some(_)) => Ok(()),
        }
    }
}

pub use crate::atomic::write_atomic;

#[cfg(test)]
mod atomic_tests {
    use super::*;

    /// state-hardening 11: the temp file had a predictable name and was
    /// opened without O_EXCL, so a symlink planted under that name sent the
    /// plan (state included) into any file the user may write.
    #[test]
    fn a_planted_symlink_at_the_temp_name_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = dir.path().join("plan.json");
        for name in [
            format!(".plan.json.tmp-{}", std::process::id()),
            ".plan.json.tmp".to_owned(),
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        write_atomic(&target, b"{\"plan\": 1}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"plan\": 1}");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
    }
}
