//! `prov secrets encrypt | edit | rekey | show | list`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use zeroize::Zeroizing;

use crate::cli::{Cli, SecretsCommand};
use crate::command::{Context, EXIT_OK};
use crate::secrets::{self, Identities, Plaintext};
use crate::spec::{SecretSpec, Spec};

/// Runs one secrets subcommand.
pub async fn run(cli: &Cli, command: &SecretsCommand) -> Result<u8> {
    // The encrypted files need not exist yet: `encrypt` and `edit` create them.
    crate::spec::allow_missing_secret_files();
    let ctx = Context::load(cli).await?;
    let spec: &crate::spec::Spec = &ctx.spec;
    let deployer = crate::deploy::Deployer::ensure(spec)
        .ok()
        .map(|d| d.private);
    let identities = |explicit: &[PathBuf]| Identities::load(explicit, deployer.as_deref());
    match command {
        SecretsCommand::Encrypt { name } => {
            let secret = find(spec, name)?;
            let mut plaintext = Zeroizing::new(Vec::new());
            std::io::stdin()
                .read_to_end(&mut plaintext)
                .context("reading the plaintext from stdin")?;
            let recipients = recipients(&ctx, name, secret).await?;
            write_secret(secret, &recipients, &plaintext)?;
            println!(
                "Encrypted secret `{name}` to {} recipient{} into {}.",
                recipients.len(),
                plural(recipients.len()),
                secret.file.display()
            );
        }
        SecretsCommand::Edit { name, identity } => {
            let secret = find(spec, name)?;
            let recipients = recipients(&ctx, name, secret).await?;
            let before: Plaintext = if secret.file.exists() {
                secrets::decrypt_secret(name, secret, &identities(identity)?)?
            } else {
                Zeroizing::new(Vec::new())
            };
            let after = edit(name, &before).await?;
            if *after == *before && secret.file.exists() {
                println!("Secret `{name}` is unchanged; the file was left alone.");
            } else {
                write_secret(secret, &recipients, &after)?;
                println!(
                    "Encrypted secret `{name}` to {} recipient{} into {}.",
                    recipients.len(),
                    plural(recipients.len()),
                    secret.file.display()
                );
            }
        }
        SecretsCommand::Rekey { identity } => {
            let ids = identities(identity)?;
            let mut decrypted = Vec::new();
            // Decrypt everything first: fail before rewriting anything.
            for (name, secret) in &spec.secrets {
                let plaintext = secrets::decrypt_secret(name, secret, &ids)?;
                let recipients = recipients(&ctx, name, secret).await?;
                decrypted.push((name, secret, plaintext, recipients));
            }
            for (name, secret, plaintext, recipients) in decrypted {
                let previous = read_sidecar(&secret.file);
                write_secret(secret, &recipients, &plaintext)?;
                let change = match previous {
                    None => "recipients before unknown (no .recipients file)".to_owned(),
                    Some(previous) => {
                        let added: Vec<String> = recipients
                            .iter()
                            .filter(|r| !previous.contains(r))
                            .map(|r| secrets::short(r))
                            .collect();
                        let removed: Vec<String> = previous
                            .iter()
                            .filter(|r| !recipients.contains(r))
                            .map(|r| secrets::short(r))
                            .collect();
                        if added.is_empty() && removed.is_empty() {
                            "recipients unchanged".to_owned()
                        } else {
                            let mut parts = Vec::new();
                            if !added.is_empty() {
                                parts.push(format!("added {}", added.join(", ")));
                            }
                            if !removed.is_empty() {
                                parts.push(format!("removed {}", removed.join(", ")));
                            }
                            parts.join("; ")
                        }
                    }
                };
                println!(
                    "{name}: re-encrypted to {} recipient{}: {change}",
                    recipients.len(),
                    plural(recipients.len())
                );
            }
        }
        SecretsCommand::Show {
            name,
            reveal,
            identity,
        } => {
            let secret = find(spec, name)?;
            if !reveal {
                bail!("refusing to print the plaintext of secret `{name}`: pass --reveal to really print it");
            }
            let plaintext = secrets::decrypt_secret(name, secret, &identities(identity)?)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&plaintext)?;
            out.flush()?;
        }
        SecretsCommand::List => {
            for (name, secret) in &spec.secrets {
                let hosts: Vec<String> = secret
                    .targets(&spec.hosts)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let recipients: Vec<String> = secret
                    .recipients
                    .iter()
                    .map(|r| secrets::short(r))
                    .collect();
                println!("{name}");
                println!("  file:        {}", secret.file.display());
                println!(
                    "  destination: {} ({}:{} {}, upload {} activation)",
                    secret.destination,
                    secret.owner,
                    secret.group,
                    secret.mode_string(),
                    secret.upload.as_str()
                );
                println!("  hosts:       {}", hosts.join(", "));
                println!("  recipients:  {}", recipients.join(", "));
            }
        }
    }
    Ok(EXIT_OK)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn find<'a>(spec: &'a Spec, name: &str) -> Result<&'a SecretSpec> {
    spec.secrets.get(name).with_context(|| {
        let known: Vec<&str> = spec.secrets.keys().map(String::as_str).collect();
        format!(
            "no secret `{name}` in {} (secrets: {})",
            spec.source.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )
    })
}

/// The secret's recipients, `@hosts` resolved from the spec and state.
async fn recipients(ctx: &Context, name: &str, secret: &SecretSpec) -> Result<Vec<String>> {
    let doc = if secret
        .recipients
        .iter()
        .any(|r| r == crate::spec::HOSTS_RECIPIENT)
    {
        ctx.read_state().await?
    } else {
        None
    };
    secrets::resolve_recipients(&ctx.spec, name, secret, doc.as_ref())
}

/// `FILE.recipients`: the recipients the file was last encrypted to by prov.
fn sidecar(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.recipients", file.display()))
}

fn read_sidecar(file: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(sidecar(file)).ok()?;
    Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect(),
    )
}

/// Encrypts `plaintext` into the secret's file (atomically, 0600) and
/// records the recipients next to it.
fn write_secret(secret: &SecretSpec, recipients: &[String], plaintext: &[u8]) -> Result<()> {
    let ciphertext = secrets::encrypt(recipients, plaintext)?;
    secrets::write_atomic(&secret.file, &ciphertext)
        .with_context(|| format!("writing {}", secret.file.display()))?;
    let mut list = String::from(
        "# recipients this file is encrypted to (written by prov; public keys only)\n",
    );
    for r in recipients {
        list.push_str(r);
        list.push('\n');
    }
    secrets::write_atomic(&sidecar(&secret.file), list.as_bytes())?;
    Ok(())
}

/// A private directory for the plaintext while it is edited: on tmpfs
/// (`/dev/shm`, `$XDG_RUNTIME_DIR`) when there is one.
fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let candidates: Vec<PathBuf> = [
        Some(PathBuf::from("/dev/shm")),
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
    ]
    .into_iter()
    .flatten()
    .chain(std::iter::once(std::env::temp_dir()))
    .collect();
    for base in candidates {
        if !base.is_dir() {
            continue;
        }
        let dir = base.join(format!("prov-secret-{}", uuid::Uuid::new_v4().simple()));
        if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_ok() {
            return Ok(dir);
        }
    }
    bail!("no writable directory for the temporary plaintext")
}

/// Stops the editor's shell and what it runs: SIGTERM to its process group
/// member, then SIGKILL if it is still there after a second.
async fn stop_editor(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    if tokio::time::timeout(std::time::Duration::from_secs(1), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Removes the edit directory, overwriting the file first.
struct Scratch {
    dir: PathBuf,
    file: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::metadata(&self.file) {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&self.file) {
                let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0)];
                let _ = f.write_all(&zeros);
                let _ = f.sync_all();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `$VISUAL`/`$EDITOR` (default `vi`) on a private copy of `before`.
/// On Ctrl-C or SIGTERM the editor is stopped and the copy removed (also
/// when this future is dropped: the editor is killed on drop, and the
/// scratch directory removes itself).
async fn edit(name: &str, before: &[u8]) -> Result<Plaintext> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = private_dir()?;
    let scratch = Scratch {
        file: dir.join(name),
        dir,
    };
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&scratch.file)?;
        f.write_all(before)?;
        f.sync_all()?;
    }
    let editor = std::env::var("VISUAL")
        .ok()
        .or_else(|| std::env::var("EDITOR").ok())
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned());
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        // `exec`: the shell becomes the editor, so stopping it stops the
        // editor too.
        .arg(format!("exec {editor} \"$1\""))
        .arg("sh")
        .arg(&scratch.file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running the editor `{editor}`"))?;
    let waited = crate::interrupt::unless_stopping(child.wait())
        .await
        .and_then(|status| crate::interrupt::check().map(|()| status));
    let status = match waited {
        Ok(status) => status.with_context(|| format!("running the editor `{editor}`"))?,
        Err(interrupted) => {
            stop_editor(&mut child).await;
            drop(scratch);
            return Err(anyhow::Error::new(interrupted)
                .context(format!("editing `{name}` interrupted; the secret was left alone and the plaintext copy removed")));
        }
    };
    if !status.success() {
        bail!("the editor `{editor}` failed ({status}); the secret was left alone");
    }
    let mut after = Zeroizing::new(Vec::new());
    std::fs::File::open(&scratch.file)?.read_to_end(&mut after)?;
    drop(scratch);
    Ok(after)
}
