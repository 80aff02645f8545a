//! Where a cluster's PKI material lives between runs: beside the spec, in
//! `pki/CLUSTER/`, so a team commits it with the spec like its other
//! secrets. Every private key and secret is age-encrypted to the
//! recipients the caller gives; certificates and public keys are plain
//! PEM, so planning (which reads only those) needs no identity and `git
//! diff` shows which certificates changed.
//!
//! ```text
//! pki/dev/
//!   kubernetes-ca.pem            kubernetes-ca-key.pem.age
//!   etcd-ca.pem                  etcd-ca-key.pem.age
//!   front-proxy-ca.pem           front-proxy-ca-key.pem.age
//!   service-account.pem          service-account-key.pem.age   (public key, no certificate)
//!   cluster-admin.pem            cluster-admin-key.pem.age
//!   encryption-key.age           (nixos)
//!   k3s-token.age                (k3s)
//!   nodes/cp/kube-apiserver.pem  nodes/cp/kube-apiserver-key.pem.age
//!   nodes/w1/kubelet.pem         nodes/w1/kubelet-key.pem.age   …
//! ```
//!
//! Leaves live here too, not only on the hosts: an unchanged leaf must
//! reach a host byte-identical on every run (its hash in state says
//! "unchanged", nothing restarts), and a host can be rebuilt from nothing.
//! Making leaves anew each run from the CA would change every file every
//! time. Only files of items the plan issues, reissues or removes are
//! touched; a kept item's `.age` file keeps its bytes (age encryption is
//! randomised, so rewriting it would change it).
//!
//! A changed item is written public part removed first, secret second,
//! public part last (each file atomically): an interruption leaves a secret
//! without its certificate, which the next plan reissues, never a
//! certificate beside a key that does not match it. [`Store::load`] checks
//! each certificate against its key anyway.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::PublicKeyData as _;

use crate::atomic::write_atomic;
use crate::secrets::Identities;

use super::check::is_node_name;
use super::pki::issue::{Item, Material};
use super::pki::renewal::{Action, Change, Existing};
use super::pki::{ItemId, Kind};
use super::secret::Secret;

/// The directory under the spec's holding every cluster's material.
pub const PKI_DIR: &str = "pki";
/// The subdirectory holding per-node items.
pub const NODES_DIR: &str = "nodes";

/// Why material cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// A file or directory cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A secret cannot be encrypted to the recipients.
    #[error("cannot encrypt {}: {message}", path.display())]
    Encrypt {
        /// The file it was meant for.
        path: PathBuf,
        /// Why (a bad recipient, none at all).
        message: String,
    },
    /// No identity decrypts a secret, or it is damaged.
    #[error("cannot decrypt {}: {source}", path.display())]
    Decrypt {
        /// The file.
        path: PathBuf,
        /// What age said.
        #[source]
        source: age::DecryptError,
    },
    /// A file that is not UTF-8 text.
    #[error("{}: not UTF-8 text", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// A certificate whose key is not the one beside it.
    #[error("{0}: the certificate does not belong to its private key (reissue it by deleting its .pem file)")]
    KeyMismatch(ItemId),
    /// An item the plan issues but the material lacks.
    #[error("{0} is to be written, but the material does not hold it")]
    Missing(ItemId),
}

/// One cluster's material directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store of `cluster` beside a spec in `spec_dir`
    /// (`spec_dir/pki/CLUSTER`).
    #[must_use]
    pub fn new(spec_dir: &Path, cluster: &str) -> Self {
        Self {
            dir: spec_dir.join(PKI_DIR).join(cluster),
        }
    }

    /// Its directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plain PEM file of `id`'s certificate or public key.
    #[must_use]
    pub fn public_path(&self, id: &ItemId) -> PathBuf {
        self.item_dir(id).join(format!("{}.pem", id.kind.stem()))
    }

    /// The age file of `id`'s private key or secret.
    #[must_use]
    pub fn secret_path(&self, id: &ItemId) -> PathBuf {
        let name = if id.kind.is_random() {
            format!("{}.age", id.kind.stem())
        } else {
            format!("{}-key.pem.age", id.kind.stem())
        };
        self.item_dir(id).join(name)
    }

    /// What exists, without decrypting anything: certificates and public
    /// keys, and which secrets have a file. A store that does not exist yet
    /// is empty.
    ///
    /// # Errors
    /// When a directory or a public file cannot be read.
    pub fn existing(&self) -> Result<Existing, MaterialError> {
        let mut existing = Existing::default();
        for id in self.items()? {
            let public = self.public_path(&id);
            if public.is_file() {
                existing.public.insert(id.clone(), read_text(&public)?);
            }
            if self.secret_path(&id).is_file() {
                existing.secrets.insert(id);
            }
        }
        Ok(existing)
    }

    /// Every item, decrypted with `identities`. Items with a secret but no
    /// public part (an interrupted write) are left out: the plan reissues
    /// them.
    ///
    /// # Errors
    /// When a file cannot be read or decrypted, or a certificate does not
    /// belong to its key.
    pub fn load(&self, identities: &Identities) -> Result<Material, MaterialError> {
        let mut material = Material::default();
        for id in self.items()? {
            let secret_path = self.secret_path(&id);
            let public_path = self.public_path(&id);
            let public = if id.kind.is_random() {
                None
            } else if public_path.is_file() {
                Some(read_text(&public_path)?)
            } else {
                continue;
            };
            if !secret_path.is_file() {
                continue;
            }
            let ciphertext = fs_err::read(&secret_path).map_err(|source| MaterialError::Io {
                path: secret_path.clone(),
                source,
            })?;
            let plaintext =
                identities
                    .decrypt(&ciphertext)
                    .map_err(|source| MaterialError::Decrypt {
                        path: secret_path.clone(),
                        source,
                    })?;
            let text = String::from_utf8(plaintext.to_vec())
                .map_err(|_| MaterialError::NotText { path: secret_path })?;
            let secret = Secret::new(text);
            if let Some(public) = &public {
                if !belongs_to(public, &secret) {
                    return Err(MaterialError::KeyMismatch(id));
                }
            }
            material.items.insert(id, Item { public, secret });
        }
        Ok(material)
    }

    /// Writes what `plan` changes: new and reissued items from `material`,
    /// their secrets encrypted to `recipients`; removed items deleted. Kept
    /// items' files are not touched.
    ///
    /// # Errors
    /// When encryption or a write fails; what was written before stays
    /// consistent (see the module docs).
    pub fn save(
        &self,
        plan: &[Change],
        material: &Material,
        recipients: &[String],
    ) -> Result<(), MaterialError> {
        for change in plan {
            let public_path = self.public_path(&change.id);
            let secret_path = self.secret_path(&change.id);
            match &change.action {
                Action::Keep => {}
                Action::Remove => {
                    remove(&public_path)?;
                    remove(&secret_path)?;
                    self.remove_empty_node_dir(&change.id);
                }
                Action::Issue | Action::Reissue(_) => {
                    let item = material
                        .items
                        .get(&change.id)
                        .ok_or_else(|| MaterialError::Missing(change.id.clone()))?;
                    let ciphertext =
                        crate::secrets::encrypt(recipients, item.secret.expose().as_bytes())
                            .map_err(|e| MaterialError::Encrypt {
                                path: secret_path.clone(),
                                message: format!("{e:#}"),
                            })?;
                    remove(&public_path)?;
                    write(&secret_path, &ciphertext)?;
                    if let Some(public) = &item.public {
                        write(&public_path, public.as_bytes())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The directory of `id`'s files.
    fn item_dir(&self, id: &ItemId) -> PathBuf {
        match &id.node {
            Some(node) => self.dir.join(NODES_DIR).join(node),
            None => self.dir.clone(),
        }
    }

    /// Every item with at least one file, by file name; names prov did not
    /// write are ignored.
    fn items(&self) -> Result<BTreeSet<ItemId>, MaterialError> {
        let mut ids = BTreeSet::new();
        for name in file_names(&self.dir)? {
            if let Some(kind) = kind_of_file(&name) {
                ids.insert(ItemId::cluster(kind));
            }
        }
        let nodes = self.dir.join(NODES_DIR);
        for node in file_names(&nodes)? {
            if !is_node_name(&node) {
                continue;
            }
            for name in file_names(&nodes.join(&node))? {
                if let Some(kind) = kind_of_file(&name) {
                    ids.insert(ItemId::node(&node, kind));
                }
            }
        }
        Ok(ids)
    }

    /// Removes a node's directory once it is empty (best effort: a left-over
    /// empty directory is harmless).
    fn remove_empty_node_dir(&self, id: &ItemId) {
        if id.node.is_some() {
            let _ = fs_err::remove_dir(self.item_dir(id));
        }
    }
}

/// The kind a file of the store holds, by its name.
fn kind_of_file(name: &str) -> Option<Kind> {
    let stem = name
        .strip_suffix("-key.pem.age")
        .or_else(|| name.strip_suffix(".pem"))
        .or_else(|| name.strip_suffix(".age"))?;
    Kind::from_stem(stem)
}

/// The names of the entries of `dir` (none when it does not exist).
fn file_names(dir: &Path) -> Result<Vec<String>, MaterialError> {
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(MaterialError::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| MaterialError::Io {
            path: dir.to_owned(),
            source,
        })?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The UTF-8 text of `path`.
fn read_text(path: &Path) -> Result<String, MaterialError> {
    let bytes = fs_err::read(path).map_err(|source| MaterialError::Io {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| MaterialError::NotText {
        path: path.to_owned(),
    })
}

/// Writes `bytes` to `path` atomically.
fn write(path: &Path, bytes: &[u8]) -> Result<(), MaterialError> {
    write_atomic(path, bytes).map_err(|source| MaterialError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Removes `path` if it exists.
fn remove(path: &Path) -> Result<(), MaterialError> {
    match fs_err::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MaterialError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Whether the certificate or public key `public` is that of `secret`'s
/// private key (unreadable keys belong to nothing).
fn belongs_to(public: &str, secret: &Secret) -> bool {
    let Ok(key) = rcgen::KeyPair::from_pem(secret.expose()) else {
        return false;
    };
    let ours = key.subject_public_key_info();
    if let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(public.as_bytes()) {
        if pem.label == "CERTIFICATE" {
            return pem
                .parse_x509()
                .is_ok_and(|certificate| certificate.public_key().raw == ours.as_slice());
        }
        return pem.contents == ours;
    }
    false
}

#[cfg(test)]
mod tests;
