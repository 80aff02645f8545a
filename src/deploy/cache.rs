//! The binary cache of `[cache]`: apply uploads each store path the cache
//! lacks once (Nix's own binary-cache format: an uncompressed NAR and a
//! narinfo signed with prov's key, written by `nix copy` into a staging
//! `file://` cache), and hosts substitute from it in parallel instead of
//! each receiving the closure over SSH. Paths the cache cannot give a host
//! still go over SSH (see `deploy::run`).
//!
//! The signing key is Nix's (`nix-store --generate-binary-cache-key`),
//! kept beside the deployer's SSH key in `.prov/cache/` (0600 in a 0700
//! directory, the same protection the deployer key has); hosts are told
//! its public half with each substitution.

#[cfg(feature = "s3")]
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
#[cfg(feature = "s3")]
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};

use crate::spec::cache::CacheSettings;
use crate::spec::Spec;

/// How many objects are uploaded at once.
#[cfg(feature = "s3")]
const UPLOADS: usize = 8;

/// prov's signing key for a deployment's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// The secret key file (`NAME:BASE64`).
    pub secret_file: PathBuf,
    /// The public key hosts trust (`NAME:BASE64`).
    pub public: String,
}

impl CacheKey {
    /// The key in `.prov/cache/` beside the spec, generated the first time
    /// (runs at once take turns, as for the deployer key).
    ///
    /// # Errors
    /// When the key cannot be read or generated.
    pub fn ensure(spec: &Spec) -> Result<Self> {
        let dir = spec
            .source
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(".prov")
            .join("cache");
        let name = format!("prov-{}-1", spec.deployment);
        let secret_file = dir.join(format!("{name}.sec"));
        let public_file = dir.join(format!("{name}.pub"));
        if !secret_file.exists() || !public_file.exists() {
            generate(&dir, &name, &secret_file, &public_file)?;
        }
        let public = fs_err::read_to_string(&public_file)?.trim().to_owned();
        Ok(Self {
            secret_file,
            public,
        })
    }
}

/// Generates the key pair in `dir` (the secret 0600), once (see
/// [`super::identity::once_in_private_dir`]).
fn generate(dir: &Path, name: &str, secret: &Path, public: &Path) -> Result<()> {
    super::identity::once_in_private_dir(
        dir,
        || secret.exists() && public.exists(),
        || generate_files(dir, name, secret, public),
    )
}

/// `nix-store --generate-binary-cache-key` into staged names, then renamed
/// into place (the public half first: the secret's presence means both).
fn generate_files(dir: &Path, name: &str, secret: &Path, public: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let staged_secret = dir.join(format!(".{name}.sec.new"));
    let staged_public = dir.join(format!(".{name}.pub.new"));
    let _ = fs_err::remove_file(&staged_secret);
    let _ = fs_err::remove_file(&staged_public);
    let output = std::process::Command::new("nix-store")
        .arg("--generate-binary-cache-key")
        .arg(name)
        .arg(&staged_secret)
        .arg(&staged_public)
        .output()
        .context("running nix-store --generate-binary-cache-key")?;
    if !output.status.success() {
        bail!(
            "nix-store --generate-binary-cache-key failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    fs_err::set_permissions(&staged_secret, std::fs::Permissions::from_mode(0o600))?;
    fs_err::rename(&staged_public, public)?;
    fs_err::rename(&staged_secret, secret)?;
    Ok(())
}

/// What publishing did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Paths asked for.
    pub paths: usize,
    /// Paths uploaded now (the rest were there).
    pub uploaded: usize,
    /// Bytes sent to the cache (NARs and narinfos).
    pub bytes: u64,
}

/// The hash part of a store path (`/nix/store/HASH-name` → `HASH`).
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
fn hash_part(path: &str) -> Option<&str> {
    let base = path.strip_prefix("/nix/store/")?;
    base.get(..32)
        .filter(|h| base.len() > 32 && base.as_bytes()[32] == b'-' && !h.contains('/'))
}

/// Without the `s3` feature there is no S3 cache.
///
/// # Errors
/// Always.
#[cfg(not(feature = "s3"))]
pub async fn publish(settings: &CacheSettings, _: &CacheKey, _: &[String]) -> Result<Published> {
    bail!(
        "this prov was built without S3 support (the `s3` cargo feature), so it cannot fill the cache {}",
        settings.url()
    )
}

/// Uploads every one of `paths` the cache lacks.
///
/// # Errors
/// When the cache cannot be listed, `nix copy` fails, or an upload fails.
#[cfg(feature = "s3")]
pub async fn publish(
    settings: &CacheSettings,
    key: &CacheKey,
    paths: &[String],
) -> Result<Published> {
    let bucket = Arc::new(
        prov_state::ObjectPrefix::connect(&settings.s3)
            .await
            .with_context(|| format!("connecting to the cache {}", settings.url()))?,
    );
    let listed = bucket.names_ending(".narinfo").await?;
    let present: BTreeSet<&str> = listed
        .iter()
        .filter_map(|n| n.strip_suffix(".narinfo"))
        .collect();
    let lacking: Vec<&String> = paths
        .iter()
        .filter(|p| hash_part(p).is_none_or(|h| !present.contains(h)))
        .collect();
    let mut published = Published {
        paths: paths.len(),
        ..Published::default()
    };
    if lacking.is_empty() {
        return Ok(published);
    }
    let stage = tempfile::Builder::new()
        .prefix("prov-cache-")
        .tempdir()
        .context("making the cache staging directory")?;
    stand_in_references(stage.path(), &lacking).await?;
    stage_paths(stage.path(), key, &lacking).await?;
    // NARs first, then the narinfos that point at them, then the cache's
    // description: a host never finds a narinfo whose NAR is not there yet.
    let mut nars = Vec::new();
    let mut narinfos = Vec::new();
    for path in &lacking {
        let Some(hash) = hash_part(path) else {
            continue;
        };
        let name = format!("{hash}.narinfo");
        let text = fs_err::read_to_string(stage.path().join(&name))
            .with_context(|| format!("nix copy wrote no narinfo for {path}"))?;
        let nar = text
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .with_context(|| format!("the narinfo of {path} names no NAR"))?
            .to_owned();
        nars.push(nar);
        narinfos.push(name);
    }
    published.bytes += upload(&bucket, stage.path(), nars, settings.public).await?;
    published.bytes += upload(&bucket, stage.path(), narinfos, settings.public).await?;
    if bucket.names_ending("nix-cache-info").await?.is_empty() {
        published.bytes += upload(
            &bucket,
            stage.path(),
            vec!["nix-cache-info".to_owned()],
            settings.public,
        )
        .await?;
    }
    published.uploaded = lacking.len();
    Ok(published)
}

/// The staging cache takes a path only when its references are valid
/// there, and for a binary cache "valid" means "has a narinfo": each
/// reference of `lacking` that the cache has already gets a narinfo made
/// from the local store's record of it (never uploaded: only `lacking`'s
/// files are).
#[cfg(feature = "s3")]
async fn stand_in_references(stage: &Path, lacking: &[&String]) -> Result<()> {
    let wanted: BTreeSet<&str> = lacking.iter().map(|p| p.as_str()).collect();
    let mut references = BTreeSet::new();
    for info in super::pathinfo::query(lacking).await? {
        references.extend(
            info.references
                .into_iter()
                .filter(|r| !wanted.contains(r.as_str())),
        );
    }
    let references: Vec<String> = references.into_iter().collect();
    for info in super::pathinfo::query(&references).await? {
        let Some(hash) = hash_part(&info.path) else {
            continue;
        };
        let refs: Vec<&str> = info
            .references
            .iter()
            .filter_map(|r| r.strip_prefix("/nix/store/"))
            .collect();
        let text = format!(
            "StorePath: {}\nURL: nar/{hash}.nar\nCompression: none\nNarHash: {}\nNarSize: {}\nReferences: {}\n",
            info.path,
            info.nar_hash,
            info.nar_size,
            refs.join(" ")
        );
        fs_err::write(stage.join(format!("{hash}.narinfo")), text)?;
    }
    Ok(())
}

/// `nix copy --no-recursive` of `paths` into a `file://` cache in `stage`:
/// uncompressed NARs, narinfos signed with `key` (paths as arguments, a few
/// hundred at a time: Debian's Nix 2.8 has no `--stdin` for `nix copy`).
#[cfg(feature = "s3")]
async fn stage_paths(stage: &Path, key: &CacheKey, paths: &[&String]) -> Result<()> {
    let to = format!(
        "file://{}?compression=none&secret-key={}",
        stage.display(),
        key.secret_file.display()
    );
    for chunk in paths.chunks(256) {
        let output = tokio::process::Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "copy",
                "--no-recursive",
                "--no-check-sigs",
                "--to",
                &to,
            ])
            .args(chunk.iter().map(|p| p.as_str()))
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .context("running nix copy")?;
        if !output.status.success() {
            bail!(
                "nix copy into the cache staging directory failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Uploads `names` from `dir`, [`UPLOADS`] at a time; the bytes sent.
#[cfg(feature = "s3")]
async fn upload(
    bucket: &Arc<prov_state::ObjectPrefix>,
    dir: &Path,
    names: Vec<String>,
    public: bool,
) -> Result<u64> {
    let permits = Arc::new(tokio::sync::Semaphore::new(UPLOADS));
    let mut uploads = tokio::task::JoinSet::new();
    for name in names {
        let bucket = Arc::clone(bucket);
        let permits = Arc::clone(&permits);
        let path = dir.join(&name);
        uploads.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let body = tokio::fs::read(&path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            let bytes = body.len() as u64;
            bucket
                .put(&name, body, public)
                .await
                .with_context(|| format!("uploading {name} to {}", bucket.url()))?;
            anyhow::Ok(bytes)
        });
    }
    let mut sent = 0;
    while let Some(done) = uploads.join_next().await {
        sent += done.context("an upload task failed")??;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_parts() {
        assert_eq!(
            hash_part("/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-x"),
            Some("zr2knphxg8yyy2mkq8akf2hfknjvdiz7")
        );
        assert_eq!(hash_part("/nix/store/short-x"), None);
        assert_eq!(hash_part("/tmp/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-x"), None);
    }
}
