//! Nix's serve protocol, the one `nix copy --to ssh://` speaks to
//! `nix-store --serve --write` on the host: each path goes as one
//! `AddToStoreNar` command, its NAR preceded by what the local store records
//! about it. The host restores the NAR straight into its store, checking
//! hash and size as it goes. `nix-store --import` instead parses every NAR
//! twice (once to find its end, once to restore it) and holds it in memory
//! in between: on the bench's hosts it took 40% more CPU per byte.
//!
//! The NARs come from the run's one `nix-store --export` stream (shared by
//! every host that lacks the same paths), which frames each NAR with the
//! path's name and references; [`reframe`] takes the NARs out of that
//! framing and puts them in the serve protocol's.
//!
//! Wire format (Nix's `serialise.hh`): numbers are 64-bit little endian;
//! a string is its length, its bytes, and zeros up to a multiple of 8; a
//! list is its length and its strings.

use anyhow::{bail, Result};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::pathinfo::PathInfo;

/// What the client says first.
const MAGIC_CLIENT: u64 = 0x390c_9deb;
/// What the host answers.
const MAGIC_HOST: u64 = 0x5452_eecb;
/// The protocol version prov speaks: 2.5, the first with `AddToStoreNar`
/// (Nix 2.0 and later).
const VERSION: u64 = 0x205;
/// The command that adds one path with its NAR.
const ADD_TO_STORE_NAR: u64 = 9;
/// What ends each path's trailer in an export stream.
const EXPORT_MAGIC: u64 = 0x4558_494e;
/// The longest string prov reads from an export's trailer (a store path).
const MAX_STRING: u64 = 64 * 1024;

/// The command that runs the protocol's host side.
pub const COMMAND: &str = "nix-store --serve --write";
/// The command that asks which paths are valid.
const QUERY_VALID_PATHS: u64 = 1;

/// A host's `nix-store --serve --write`, greeted: the plan asks it which
/// paths the host has, the copy then sends it the missing ones (one
/// process and one session for both, as `nix copy` does).
#[derive(Debug)]
pub struct Open {
    /// The conversation.
    pub session: crate::ssh::Session,
    /// The host's protocol version.
    pub version: u64,
}

/// The `QueryValidPaths` command for `paths` (no locking, no
/// substitution).
#[must_use]
pub fn query_valid_paths(paths: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + paths.len() * 72);
    put_u64(&mut out, QUERY_VALID_PATHS);
    put_u64(&mut out, 0);
    put_u64(&mut out, 0);
    put_strs(&mut out, paths.iter());
    out
}

/// Reads a number from the host.
///
/// # Errors
/// When the command ends first.
pub async fn read_u64(session: &mut crate::ssh::Session) -> Result<u64, crate::ssh::SshError> {
    let bytes = session.read_exact(8).await?;
    let mut word = [0; 8];
    word.copy_from_slice(&bytes);
    Ok(u64::from_le_bytes(word))
}

/// Reads the host's greeting: its version.
///
/// # Errors
/// When it does not greet as Nix does.
pub async fn read_greeting(session: &mut crate::ssh::Session) -> Result<u64> {
    let magic = read_u64(session).await?;
    if magic != MAGIC_HOST {
        bail!("the host's `{COMMAND}` did not greet as Nix does");
    }
    Ok(read_u64(session).await?)
}

/// Reads a list of strings (store paths) from the host.
///
/// # Errors
/// When the command ends first, or the list is not one of store paths.
pub async fn read_strings(session: &mut crate::ssh::Session) -> Result<Vec<String>> {
    let count = read_u64(session).await?;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = read_u64(session).await?;
        if len > MAX_STRING {
            bail!("the host sent a {len}-byte store path");
        }
        let bytes = session.read_exact(len as usize + padding(len)).await?;
        let text = std::str::from_utf8(&bytes[..len as usize])
            .map_err(|_| anyhow::anyhow!("the host sent a store path that is not UTF-8"))?;
        out.push(text.to_owned());
    }
    Ok(out)
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    put_u64(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
    out.resize(out.len() + padding(value.len() as u64), 0);
}

fn put_strs<'a>(out: &mut Vec<u8>, values: impl ExactSizeIterator<Item = &'a String>) {
    put_u64(out, values.len() as u64);
    for value in values {
        put_str(out, value);
    }
}

/// Zeros after a string of `len` bytes.
fn padding(len: u64) -> usize {
    // Less than 8.
    ((8 - len % 8) % 8) as usize
}

/// The client's greeting: magic, then its version (the host's answer is
/// read with the rest of its output).
#[must_use]
pub fn greeting() -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    put_u64(&mut out, MAGIC_CLIENT);
    put_u64(&mut out, VERSION);
    out
}

/// The `AddToStoreNar` command for `info`, up to where its NAR follows.
///
/// # Errors
/// When its NAR hash cannot be read.
pub fn add_to_store_nar(info: &PathInfo) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256 + info.references.len() * 64);
    put_u64(&mut out, ADD_TO_STORE_NAR);
    put_str(&mut out, &info.path);
    put_str(&mut out, info.deriver.as_deref().unwrap_or(""));
    put_str(&mut out, &info.nar_hash_base16()?);
    put_strs(&mut out, info.references.iter());
    put_u64(&mut out, info.registration_time);
    put_u64(&mut out, info.nar_size);
    // Not built by the host ("ultimate" trust is for what a store built).
    put_u64(&mut out, 0);
    put_strs(&mut out, info.signatures.iter());
    put_str(&mut out, info.ca.as_deref().unwrap_or(""));
    Ok(out)
}

/// What went wrong reading an export stream.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The export is not what `nix-store --export` of these paths writes.
    #[error("the export is not what was asked for: {0}")]
    Unexpected(String),
}

/// Why [`reframe`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReframeError {
    /// The export failed or is not what was asked for.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The host stopped reading (its side says why).
    #[error("the host stopped reading")]
    HostGone,
    /// A path's record could not be sent.
    #[error("{0:#}")]
    Record(anyhow::Error),
}

/// An export stream as the chunks it arrives in: fields are read across
/// chunk boundaries, NAR bytes handed on as slices of the chunks (no copy).
struct Chunks {
    from: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Chunks {
    /// Whether there is a byte to read (waiting for the next chunk).
    async fn more(&mut self) -> bool {
        while self.current.is_empty() {
            match self.from.recv().await {
                Some(chunk) => self.current = chunk,
                None => return false,
            }
        }
        true
    }

    async fn read_exact(&mut self, len: usize, what: &str) -> Result<Vec<u8>, ExportError> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            if !self.more().await {
                return Err(ExportError::Unexpected(format!("it ends inside {what}")));
            }
            let take = (len - out.len()).min(self.current.len());
            out.extend_from_slice(&self.current.split_to(take));
        }
        Ok(out)
    }

    async fn read_u64(&mut self, what: &str) -> Result<u64, ExportError> {
        let bytes = self.read_exact(8, what).await?;
        let mut word = [0; 8];
        word.copy_from_slice(&bytes);
        Ok(u64::from_le_bytes(word))
    }

    async fn read_str(&mut self, what: &str) -> Result<String, ExportError> {
        let len = self.read_u64(what).await?;
        if len > MAX_STRING {
            return Err(ExportError::Unexpected(format!(
                "a {len}-byte string for {what}"
            )));
        }
        let mut bytes = self.read_exact(len as usize + padding(len), what).await?;
        bytes.truncate(len as usize);
        String::from_utf8(bytes)
            .map_err(|_| ExportError::Unexpected(format!("{what} is not UTF-8")))
    }

    async fn expect_u64(&mut self, want: u64, what: &str) -> Result<(), ExportError> {
        let got = self.read_u64(what).await?;
        if got == want {
            Ok(())
        } else {
            Err(ExportError::Unexpected(format!(
                "{what}: {got:#x} where {want:#x} belongs"
            )))
        }
    }

    /// The next slice of at most `len` bytes (`None` at the end).
    async fn slice(&mut self, len: u64) -> Option<Bytes> {
        if !self.more().await {
            return None;
        }
        let take = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(self.current.len());
        Some(self.current.split_to(take))
    }
}

/// Sends the protocol stream for `infos` (dependency order) to `to`:
/// greeting, then one `AddToStoreNar` per path, each NAR taken from
/// `export`, the `nix-store --export` stream of exactly these paths. NAR
/// bytes go on as slices of the export's chunks.
///
/// # Errors
/// When the export is not the export of `infos`' paths, ends early, or the
/// host stops reading.
pub async fn reframe(
    export: mpsc::Receiver<Bytes>,
    infos: &[PathInfo],
    greet: bool,
    to: mpsc::Sender<Bytes>,
) -> Result<(), ReframeError> {
    let mut export = Chunks {
        from: export,
        current: Bytes::new(),
    };
    let send = |chunk: Bytes| {
        let to = &to;
        async move { to.send(chunk).await.map_err(|_| ReframeError::HostGone) }
    };
    if greet {
        send(Bytes::from(greeting())).await?;
    }
    for info in infos {
        export.expect_u64(1, "the mark before a path").await?;
        let header = add_to_store_nar(info).map_err(ReframeError::Record)?;
        send(Bytes::from(header)).await?;
        let mut left = info.nar_size;
        while left > 0 {
            let Some(chunk) = export.slice(left).await else {
                return Err(ExportError::Unexpected(format!(
                    "it ends inside the NAR of {}",
                    info.path
                ))
                .into());
            };
            left -= chunk.len() as u64;
            send(chunk).await?;
        }
        export
            .expect_u64(EXPORT_MAGIC, "the mark after a NAR")
            .await?;
        let path = export.read_str("a path").await?;
        if path != info.path {
            return Err(ExportError::Unexpected(format!(
                "{path} where {} belongs (its NAR size may not be what the store records)",
                info.path
            ))
            .into());
        }
        let references = export.read_u64("the references").await?;
        for _ in 0..references {
            export.read_str("a reference").await?;
        }
        export.read_str("the deriver").await?;
        // Nix before 2.0 could sign exports; a signature follows a 1.
        if export.read_u64("the signature mark").await? == 1 {
            export.read_str("a signature").await?;
        }
    }
    export.expect_u64(0, "the end of the export").await?;
    Ok(())
}

/// What the host answered.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// The host's protocol version, when it greeted.
    pub version: Option<u64>,
    /// Paths it confirmed adding.
    pub added: usize,
}

/// Reads the host's answer: its greeting (unless it `greeted` already),
/// then one `1` per path added.
///
/// # Errors
/// When the answer is not the serve protocol's.
pub fn read_reply(stdout: &[u8], greeted: bool) -> Result<Reply> {
    if stdout.len() % 8 != 0 {
        bail!("the host's `{COMMAND}` answered something other than the protocol");
    }
    let mut words = stdout.chunks_exact(8).map(|c| {
        let mut word = [0; 8];
        word.copy_from_slice(c);
        u64::from_le_bytes(word)
    });
    let version = if greeted {
        None
    } else {
        match (words.next(), words.next()) {
            (None, _) => None,
            (Some(MAGIC_HOST), Some(version)) => Some(version),
            _ => bail!("the host's `{COMMAND}` did not greet as Nix does"),
        }
    };
    let mut added = 0;
    for word in words {
        if word != 1 {
            bail!("the host's `{COMMAND}` answered something other than success");
        }
        added += 1;
    }
    Ok(Reply { version, added })
}

/// Refuses a host whose Nix greeted with a `version` that has no
/// `AddToStoreNar`.
///
/// # Errors
/// Saying which version the host speaks and what to do.
pub fn check_version(version: u64) -> Result<()> {
    if version >> 8 == VERSION >> 8 && version & 0xff >= VERSION & 0xff {
        return Ok(());
    }
    bail!(
        "the host's Nix speaks the serve protocol {}.{}; prov copies with 2.5 or later \
         (what `nix copy` uses): upgrade Nix on the host",
        version >> 8,
        version & 0xff
    )
}

/// An export stream of `entries` as `nix-store --export` frames it, for
/// tests that make NARs by hand.
#[cfg(test)]
fn framed_export(entries: &[(&PathInfo, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (info, nar) in entries {
        put_u64(&mut out, 1);
        out.extend_from_slice(nar);
        put_u64(&mut out, EXPORT_MAGIC);
        put_str(&mut out, &info.path);
        put_strs(&mut out, info.references.iter());
        put_str(&mut out, info.deriver.as_deref().unwrap_or(""));
        put_u64(&mut out, 0);
    }
    put_u64(&mut out, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str, nar: &[u8]) -> PathInfo {
        PathInfo {
            path: path.to_owned(),
            nar_hash: format!("sha256:{}", "ab".repeat(32)),
            nar_size: nar.len() as u64,
            references: vec!["/nix/store/r-dep".to_owned()],
            deriver: None,
            registration_time: 5,
            signatures: Vec::new(),
            ca: None,
        }
    }

    #[test]
    fn strings_are_padded_to_eight_bytes() {
        let mut out = Vec::new();
        put_str(&mut out, "abc");
        assert_eq!(
            out,
            [3, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0]
        );
        let mut out = Vec::new();
        put_str(&mut out, "12345678");
        assert_eq!(out.len(), 16);
    }

    /// Feeds `bytes` in chunks of `size` and collects what `reframe` sends.
    async fn run(bytes: &[u8], size: usize, infos: &[PathInfo]) -> Result<Vec<u8>, ReframeError> {
        let (feed, export) = mpsc::channel(bytes.len() / size + 1);
        for chunk in bytes.chunks(size) {
            feed.send(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        drop(feed);
        let (to, mut sent) = mpsc::channel(1024);
        reframe(export, infos, true, to).await?;
        let mut out = Vec::new();
        while let Some(chunk) = sent.recv().await {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn an_export_becomes_one_add_per_path_with_its_nar() {
        let (a, b) = (vec![7u8; 13], vec![9u8; 8]);
        let infos = [info("/nix/store/a-x", &a), info("/nix/store/b-y", &b)];
        let export = framed_export(&[(&infos[0], &a), (&infos[1], &b)]);
        let mut want = greeting();
        for (info, nar) in [(&infos[0], &a), (&infos[1], &b)] {
            want.extend(add_to_store_nar(info).unwrap());
            want.extend_from_slice(nar);
        }
        // Fields and NARs split across chunks anywhere.
        for size in [1, 3, 7, 8, 64, export.len()] {
            assert_eq!(
                run(&export, size, &infos).await.unwrap(),
                want,
                "chunks of {size}"
            );
        }
    }

    #[tokio::test]
    async fn an_export_of_other_paths_or_sizes_is_refused() {
        let a = vec![7u8; 13];
        let export = framed_export(&[(&info("/nix/store/a-x", &a), &a)]);
        let refused = |result: Result<Vec<u8>, ReframeError>| {
            matches!(
                result,
                Err(ReframeError::Export(ExportError::Unexpected(_)))
            )
        };
        // Another path than asked for.
        assert!(refused(
            run(&export, 5, &[info("/nix/store/z-z", &a)]).await
        ));
        // A NAR size the export does not match.
        let mut short = info("/nix/store/a-x", &a);
        short.nar_size = 5;
        assert!(refused(run(&export, 5, &[short]).await));
        // Cut off inside a NAR.
        assert!(refused(
            run(&export[..12], 5, &[info("/nix/store/a-x", &a)]).await
        ));
    }

    #[test]
    fn the_reply_counts_the_paths_added() {
        let mut reply = Vec::new();
        put_u64(&mut reply, MAGIC_HOST);
        put_u64(&mut reply, 0x207);
        assert_eq!(
            read_reply(&reply, false).unwrap(),
            Reply {
                version: Some(0x207),
                added: 0
            }
        );
        put_u64(&mut reply, 1);
        put_u64(&mut reply, 1);
        assert_eq!(read_reply(&reply, false).unwrap().added, 2);
        // After the survey's greeting: only the answers.
        assert_eq!(read_reply(&reply[16..], true).unwrap().added, 2);
        assert_eq!(
            read_reply(&[], false).unwrap(),
            Reply {
                version: None,
                added: 0
            }
        );
        assert!(read_reply(&[1, 2, 3], false).is_err());
        for taken in [0x205, 0x207] {
            assert!(check_version(taken).is_ok(), "{taken:#x}");
        }
        for refused in [0x204, 0x305] {
            assert!(check_version(refused).is_err(), "{refused:#x}");
        }
        let error = check_version(0x204).unwrap_err().to_string();
        assert!(error.contains("protocol 2.4"), "{error}");
    }
}
