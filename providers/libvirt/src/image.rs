//! The base image every VM's overlay sits on: a volume already in the pool,
//! or a local file prov uploads into the pool once.
//!
//! An uploaded base is named after the file and a digest of its path, size
//! and modification time (`debian-12-3f2a9c1b.qcow2`), so a rebuilt image is
//! uploaded again under a new name while VMs on the old one keep working.
//! An upload cut short leaves a volume whose tail differs from the file's;
//! the next run compares the last 64 KiB, deletes such a volume and uploads
//! again. Bases are never deleted by prov: other deployments may sit on them.

use std::io::Read;
use std::path::Path;

use prov_provider::ProviderError;

use crate::conn::{Libvirt, VolumeInfo};
use crate::error::missing;
use crate::xml;

/// How much of the end of an uploaded base is compared with the file.
const TAIL: u64 = 64 * 1024;

/// The format and virtual size of an image whose first bytes are `header`
/// and whose file is `size` bytes: qcow2 (magic `QFI\xfb`, size at offset
/// 24) or raw.
pub(crate) fn probe(header: &[u8], size: u64) -> (&'static str, u64) {
    if header.get(..4) == Some(b"QFI\xfb".as_slice()) {
        if let Some(bytes) = header.get(24..32).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            return ("qcow2", u64::from_be_bytes(bytes));
        }
    }
    ("raw", size)
}

/// The volume name of local file `path` (with this size and mtime).
pub(crate) fn volume_name(path: &Path, size: u64, mtime_ns: i128) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let digest =
        prov_provider::sha256_hex(format!("{}\0{size}\0{mtime_ns}", path.display()).as_bytes());
    format!("{stem}-{}{ext}", digest.get(..8).unwrap_or_default())
}

/// Finds (or uploads) the base `base` in `pool`.
///
/// # Errors
/// [`ProviderError::Config`] when the file or volume does not exist, saying
/// how to make one; API errors from libvirt.
pub(crate) async fn ensure(
    libvirt: &Libvirt,
    pool: &str,
    base: &str,
) -> Result<VolumeInfo, ProviderError> {
    if !base.contains('/') {
        return libvirt.volume(pool, base).await?.ok_or_else(|| {
            let uri = libvirt.uri();
            missing(format!(
                "base image volume `{base}` is not in pool `{pool}` (`virsh -c {uri} vol-list {pool}`); upload one (`virsh -c {uri} vol-create-as {pool} {base} SIZE --format qcow2 && virsh -c {uri} vol-upload --pool {pool} {base} FILE`), or set `base` to the image file's path and prov uploads it"
            ))
        });
    }
    let path = Path::new(base);
    let meta = std::fs::metadata(path).map_err(|e| {
        missing(format!(
            "base image {base} cannot be read: {e}; build one (scripts/libvirt-image.sh builds prov's Debian test image) or name a volume of pool `{pool}`"
        ))
    })?;
    if !meta.is_file() {
        return Err(missing(format!("base image {base} is not a file")));
    }
    let size = meta.len();
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0));
    let name = volume_name(path, size, mtime_ns);
    let mut header = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(32).read_to_end(&mut header))
        .map_err(|e| missing(format!("base image {base} cannot be read: {e}")))?;
    // The format comes from the file: libvirt only probes an uploaded
    // volume's format at its next pool refresh.
    let (format, capacity) = probe(&header, size);
    let as_uploaded = |volume: VolumeInfo| VolumeInfo {
        path: volume.path,
        capacity,
        format: format.to_owned(),
    };
    // Another prov on this machine (a parallel CI job) may be uploading the
    // same base: its half-written volume must not look "incomplete" to us
    // (we would delete it under its VMs). One upload at a time per volume.
    let _upload = UploadLock::acquire(libvirt.uri(), pool, &name).await?;
    if let Some(volume) = libvirt.volume(pool, &name).await? {
        if tail_matches(libvirt, pool, &name, path, size).await? {
            return Ok(as_uploaded(volume));
        }
        tracing::info!(volume = %name, "base image volume is incomplete; uploading it again");
        libvirt.delete_volume(pool, &name).await?;
    }
    tracing::info!(file = %base, volume = %name, pool, bytes = size, "uploading the base image");
    // Created raw and exactly as large as the file, then overwritten.
    libvirt
        .create_volume(pool, xml::volume(&name, size, "raw", None))
        .await?;
    let file = std::fs::File::open(path)
        .map_err(|e| missing(format!("base image {base} cannot be read: {e}")))?;
    if let Err(error) = libvirt.upload(pool, &name, size, Box::new(file)).await {
        if let Err(cleanup) = libvirt.delete_volume(pool, &name).await {
            tracing::warn!(volume = %name, %cleanup, "cannot delete a half-uploaded base image");
        }
        return Err(error);
    }
    libvirt
        .volume(pool, &name)
        .await?
        .map(as_uploaded)
        .ok_or_else(|| {
            ProviderError::api(
                "upload base image",
                format!("volume {name} vanished after its upload"),
            )
        })
}

/// An exclusive lock, across processes on this machine, on uploading one
/// base volume: a `flock`ed file in the temp directory named after the
/// libvirt URI, pool and volume. The kernel releases it when the process
/// ends, so a killed upload never leaves it held.
struct UploadLock {
    _file: std::fs::File,
}

impl UploadLock {
    async fn acquire(uri: &str, pool: &str, volume: &str) -> Result<Self, ProviderError> {
        let digest = prov_provider::sha256_hex(format!("{uri}\0{pool}\0{volume}").as_bytes());
        let path = std::env::temp_dir().join(format!(
            "prov-libvirt-base-{}.lock",
            digest.get(..16).unwrap_or_default()
        ));
        let failed = |e: std::io::Error| {
            ProviderError::api_caused_by(
                "lock the base image upload",
                path.display().to_string(),
                e,
            )
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(failed)?;
        // Blocks until the other upload is done: it runs on a blocking thread.
        let file = tokio::task::spawn_blocking(move || {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .map(|()| file)
                .map_err(std::io::Error::from)
        })
        .await
        .map_err(|e| {
            ProviderError::api_caused_by("lock the base image upload", "the locking thread", e)
        })?
        .map_err(failed)?;
        Ok(Self { _file: file })
    }
}

/// Whether the last bytes of volume `name` equal those of `path`.
async fn tail_matches(
    libvirt: &Libvirt,
    pool: &str,
    name: &str,
    path: &Path,
    size: u64,
) -> Result<bool, ProviderError> {
    let length = TAIL.min(size);
    let offset = size - length;
    let remote = libvirt.download(pool, name, offset, length).await?;
    let mut local = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
        f.take(length).read_to_end(&mut local)
    });
    match read {
        Ok(_) => Ok(remote == local),
        Err(e) => Err(missing(format!(
            "base image {} cannot be read: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_qcow2_and_raw() {
        let mut qcow = b"QFI\xfb\0\0\0\x03".to_vec();
        qcow.resize(24, 0);
        qcow.extend_from_slice(&(2_u64 << 30).to_be_bytes());
        assert_eq!(probe(&qcow, 1000), ("qcow2", 2 << 30));
        assert_eq!(probe(b"\0\0", 1000), ("raw", 1000));
    }

    #[test]
    fn names_follow_the_file() {
        let a = volume_name(Path::new("/c/debian 12.qcow2"), 10, 1);
        assert!(a.starts_with("debian_12-") && a.ends_with(".qcow2"), "{a}");
        assert_ne!(a, volume_name(Path::new("/c/debian 12.qcow2"), 10, 2));
        assert_eq!(a, volume_name(Path::new("/c/debian 12.qcow2"), 10, 1));
    }
}
