//! One `nix-store --export` per set of store paths in a run, streamed to
//! every host that lacks exactly that set: the first host to ask starts the
//! export, which is written once to a temporary file as it is produced;
//! every host (the first, those asking while it runs, those asking later)
//! reads that file from the start, following it as it grows. Eight new
//! hosts of one system cost one export, not eight.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

/// How much a reader moves at a time.
const CHUNK: usize = 256 * 1024;
/// Chunks read ahead of the host.
const QUEUED: usize = 4;

/// The exports of one run, by the paths they hold.
#[derive(Debug, Default)]
pub struct Exports {
    running: Mutex<HashMap<Vec<String>, Arc<Shared>>>,
}

/// How far an export has got.
#[derive(Debug, Clone, Default)]
struct Written {
    /// Bytes in the file so far.
    bytes: u64,
    /// Set when it ended: fine, or why not.
    done: Option<Result<(), String>>,
}

/// One export being (or having been) written to its file.
#[derive(Debug)]
struct Shared {
    file: PathBuf,
    written: watch::Receiver<Written>,
    /// Keeps the directory (and the file) for as long as the export is
    /// shared.
    _dir: tempfile::TempDir,
}

/// A host's copy of a shared export: read `stream`; `done` says whether
/// the export behind it ended well.
#[derive(Debug)]
pub struct Stream {
    /// The export's bytes, from the start, in chunks read straight from its
    /// file (ends early when the export fails: `done` says so).
    pub stream: mpsc::Receiver<Bytes>,
    /// The reader's outcome: the export's error, if it failed.
    pub done: JoinHandle<Result<()>>,
}

impl Exports {
    /// A stream of the export of `paths` (dependency order), started now
    /// unless this run already exports exactly these paths.
    ///
    /// # Errors
    /// When `nix-store --export` cannot be started or its file made.
    pub async fn open(&self, paths: &[String]) -> Result<Stream> {
        let shared = {
            let mut running = self.running.lock().await;
            match running.get(paths) {
                Some(shared) => Arc::clone(shared),
                None => {
                    let shared = Arc::new(Shared::start(paths)?);
                    running.insert(paths.to_vec(), Arc::clone(&shared));
                    shared
                }
            }
        };
        let (writer, stream) = mpsc::channel(QUEUED);
        let done = tokio::spawn(follow(shared, writer));
        Ok(Stream { stream, done })
    }
}

impl Shared {
    /// Starts `nix-store --export PATHS` into a new temporary file.
    fn start(paths: &[String]) -> Result<Self> {
        tracing::info!(
            paths = paths.len(),
            "exporting once for every host that lacks these paths"
        );
        let dir = tempfile::Builder::new()
            .prefix("prov-export-")
            .tempdir()
            .context("making a directory for the export")?;
        let file = dir.path().join("closure.export");
        let mut export = super::nix::export(paths)?;
        let stdout = export
            .stdout
            .take()
            .context("nix-store --export has no stdout")?;
        let (tx, rx) = watch::channel(Written::default());
        let path = file.clone();
        tokio::spawn(async move {
            let outcome = produce(export, stdout, &path, &tx).await;
            tx.send_modify(|w| w.done = Some(outcome.map_err(|e| format!("{e:#}"))));
        });
        Ok(Self {
            file,
            written: rx,
            _dir: dir,
        })
    }
}

/// Copies the export's output into `path`, saying how far it got.
async fn produce(
    mut export: tokio::process::Child,
    mut stdout: tokio::process::ChildStdout,
    path: &std::path::Path,
    written: &watch::Sender<Written>,
) -> Result<()> {
    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    let mut buffer = vec![0; CHUNK];
    loop {
        let n = stdout
            .read(&mut buffer)
            .await
            .context("reading nix-store --export")?;
        if n == 0 {
            break;
        }
        file.write_all(&buffer[..n])
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        file.flush().await?;
        written.send_modify(|w| w.bytes += n as u64);
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = export.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    let status = export
        .wait()
        .await
        .context("waiting for nix-store --export")?;
    if !status.success() {
        anyhow::bail!("nix-store --export failed ({status}): {}", stderr.trim());
    }
    Ok(())
}

/// Sends the export's file to `out` from the start, following it as it
/// grows, until the export has ended and everything is through.
async fn follow(shared: Arc<Shared>, out: mpsc::Sender<Bytes>) -> Result<()> {
    let mut written = shared.written.clone();
    let mut file = loop {
        // The producer creates the file before it reports any byte.
        if written.borrow().bytes > 0 || written.borrow().done.is_some() {
            if let Ok(file) = tokio::fs::File::open(&shared.file).await {
                break Some(file);
            }
            if written.borrow().bytes == 0 {
                break None;
            }
        }
        if written.changed().await.is_err() {
            break None;
        }
    };
    let mut position = 0u64;
    loop {
        let state = written.borrow_and_update().clone();
        if position < state.bytes {
            let Some(file) = file.as_mut() else {
                anyhow::bail!("the export's file went missing");
            };
            let want = usize::try_from(state.bytes - position)
                .unwrap_or(CHUNK)
                .min(CHUNK);
            file.seek(std::io::SeekFrom::Start(position)).await?;
            let mut chunk = BytesMut::with_capacity(want);
            let n = (&mut *file).take(want as u64).read_buf(&mut chunk).await?;
            if n == 0 {
                anyhow::bail!("the export's file is shorter than reported");
            }
            if out.send(chunk.freeze()).await.is_err() {
                // The host stopped reading (its import failed): the copy
                // reports that.
                return Ok(());
            }
            position += n as u64;
            continue;
        }
        match state.done {
            Some(Ok(())) => return Ok(()),
            Some(Err(error)) => anyhow::bail!(error),
            None => {
                if written.changed().await.is_err() {
                    anyhow::bail!("the export stopped without a word");
                }
            }
        }
    }
}
