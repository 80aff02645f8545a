//! [`LocalProvider`]: the [`Provider`] implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prov_provider::machine::{build_or_clean_up, check_in_place, read_each};
use prov_provider::{
    Address, AttributeSchema, Attributes, CreateRequest, Observed, Provider, ProviderError,
    UpdateRequest,
};
use serde_json::Value;

use crate::address::{self, AddressLock};
use crate::attrs::{self, HostSpec};
use crate::error::{config_error, io_error};
use crate::host_dir::{self, is_safe_name, safe_name, HostDir};
use crate::{
    check_environment, find_program, process, sshd, LocalSettings, Tools, HOST, KIND,
    PROVIDER_NAME, SSH_PORT,
};

/// How long sshd may take to answer after start.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a killed host may take to be gone.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two looks while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long `read` waits for a host's SSH banner.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The local provider: hosts as namespace containers on this machine.
#[derive(Debug)]
pub struct LocalProvider {
    root: PathBuf,
    deployment: String,
    tools: Tools,
}

impl LocalProvider {
    /// The kinds this provider manages.
    pub const KINDS: &'static [&'static str] = &[KIND];

    /// The attributes of `kind`, known without a provider (spec checks).
    #[must_use]
    pub fn kind_schema(kind: &str) -> Option<&'static [AttributeSchema]> {
        HOST.schema_of(kind)
    }

    /// Builds a provider after checking the machine: Linux, root, and
    /// `unshare`, `setsid`, `mount` and `sshd` installed.
    /// The root directory is created by the first create, not here.
    ///
    /// # Errors
    /// [`ProviderError::Config`] naming what is missing or invalid.
    pub fn new(deployment: &str, settings: &LocalSettings) -> Result<Self, ProviderError> {
        let is_root = rustix::process::geteuid().is_root();
        let tools = check_environment(std::env::consts::OS, is_root, find_program)?;
        Self::with_tools(deployment, settings, tools)
    }

    /// Builds a provider of `deployment`'s hosts with already located tools
    /// (no environment check).
    ///
    /// # Errors
    /// [`ProviderError::Config`] for an invalid deployment name or an unusable
    /// root directory.
    pub fn with_tools(
        deployment: &str,
        settings: &LocalSettings,
        tools: Tools,
    ) -> Result<Self, ProviderError> {
        HOST.check_deployment(deployment)?;
        // Made absolute now, created by the first create: a plan writes
        // nothing.
        let root = if settings.root.exists() {
            fs_err::canonicalize(&settings.root)
                .map_err(|e| io_error("resolve local root", &settings.root, e))?
        } else {
            std::path::absolute(&settings.root)
                .map_err(|e| io_error("resolve local root", &settings.root, e))?
        };
        check_root(&root)?;
        Ok(Self {
            root,
            deployment: deployment.to_owned(),
            tools,
        })
    }

    /// The root directory, made absolute.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The deployment this provider manages hosts of.
    #[must_use]
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// The provider id a host at `address` gets: `local-DEPLOYMENT-NAME`.
    #[must_use]
    pub fn id_for(&self, address: &Address) -> String {
        self.id_for_name(&safe_name(address))
    }

    fn id_for_name(&self, name: &str) -> String {
        format!("{}{name}", self.id_prefix())
    }

    /// What every id of this deployment's hosts starts with.
    fn id_prefix(&self) -> String {
        format!("{PROVIDER_NAME}-{}-", self.deployment)
    }

    fn deployment_dir(&self) -> PathBuf {
        self.root.join(&self.deployment)
    }

    /// The host directory an id stands for.
    fn dir_for_id(&self, id: &str) -> Result<HostDir, ProviderError> {
        let prefix = self.id_prefix();
        match id.strip_prefix(&prefix) {
            Some(name) if is_safe_name(name) => Ok(HostDir::new(self.deployment_dir().join(name))),
            _ => Err(config_error(format!(
                "`{id}` is not the id of a local host of deployment `{}` (expected {prefix}NAME)",
                self.deployment
            ))),
        }
    }

    /// The host in `dir` as it is now, or `None` unless its outer process is
    /// alive (not a zombie) and its sshd answers with a banner.
    async fn observe(&self, dir: &HostDir, id: &str) -> Option<Observed> {
        let pid = dir.read_pid(host_dir::PID)?;
        if !process::is_host_process(pid, dir.path()) {
            tracing::debug!(id, pid, "host process is gone");
            return None;
        }
        let address: Ipv4Addr = dir.read(host_dir::ADDRESS)?.parse().ok()?;
        if sshd::probe(address, PROBE_TIMEOUT).await.is_none() {
            tracing::debug!(id, %address, "host does not answer on port 22");
            return None;
        }
        let keys = dir.read(host_dir::AUTHORIZED_KEYS).unwrap_or_default();
        let mut attributes = Attributes::new();
        let mut set = |name: &str, value: Value| attributes.insert(name.to_owned(), value);
        set(attrs::HOSTNAME, dir.read(host_dir::HOSTNAME)?.into());
        set(attrs::ADDRESS, address.to_string().into());
        set(
            attrs::AUTHORIZED_KEYS,
            prov_provider::authorized_keys_from_lines(&keys),
        );
        set(attrs::SSH_HOST, address.to_string().into());
        set(attrs::SSH_PORT, SSH_PORT.into());
        set(attrs::HOST_KEY, sshd::read_host_key(dir)?.into());
        set(attrs::PID, pid.into());
        set(
            attrs::ROOT,
            dir.path().to_string_lossy().into_owned().into(),
        );
        Some(Observed {
            id: id.to_owned(),
            attributes,
        })
    }

    /// Kills whatever runs of the host in `dir`, then removes the directory.
    /// The directory is touched only once no process of the host is left, so
    /// nothing is removed through a live container's mounts.
    async fn destroy(&self, dir: &HostDir) -> Result<(), ProviderError> {
        process::kill_host(dir, GONE_TIMEOUT, POLL_INTERVAL).await?;
        if !dir.exists() {
            return Ok(());
        }
        let path = dir.path().to_owned();
        let removal = tokio::task::spawn_blocking(move || fs_err::remove_dir_all(&path)).await;
        match removal {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_error("remove host directory", dir.path(), e)),
            Err(e) => Err(ProviderError::api_caused_by(
                "remove host directory",
                dir.path().display().to_string(),
                e,
            )),
        }
    }

    /// Fills a fresh host directory and starts the host; the caller cleans up
    /// on failure.
    async fn start(
        &self,
        dir: &HostDir,
        request: &CreateRequest<'_>,
        spec: &HostSpec,
        id: &str,
    ) -> Result<Observed, ProviderError> {
        let deployment_dir = self.deployment_dir();
        fs_err::create_dir_all(&deployment_dir)
            .map_err(|e| io_error("create deployment directory", &deployment_dir, e))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.path())
            .map_err(|e| io_error("create host directory", dir.path(), e))?;
        dir.write(host_dir::RESOURCE, &format!("{}\n", request.address), 0o644)?;
        dir.write(host_dir::TOKEN, &format!("{}\n", request.token), 0o600)?;
        dir.write(host_dir::HOSTNAME, &format!("{}\n", spec.hostname), 0o644)?;
        dir.create_subdir("nix/store")?;
        dir.create_subdir("nix/var/nix")?;
        dir.create_subdir(host_dir::HOME)?;
        let keys = attrs::authorized_keys_file(&spec.authorized_keys);
        dir.write(host_dir::AUTHORIZED_KEYS, &keys, 0o600)?;
        sshd::generate_host_key(dir)?;
        let run = sshd::run_script(&self.tools, dir);
        dir.write(host_dir::RUN_SCRIPT, &run, 0o644)?;
        let init = sshd::init_script(&self.tools, dir, &spec.hostname, &sshd::overlaid_tops());
        dir.write(host_dir::INIT_SCRIPT, &init, 0o644)?;
        // sshd's privilege separation directory, and the mount points of the
        // host's /nix and /run/keys (empty directories if the machine lacks them).
        for path in ["/run/sshd", "/run/keys", "/nix"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .map_err(|e| io_error("create directory", Path::new(path), e))?;
        }

        let lock = AddressLock::acquire().await?;
        let address = match spec.address {
            Some(wanted) => {
                address::check_free(&self.root, dir.path(), wanted).await?;
                wanted
            }
            None => address::allocate(&self.root, dir.path()).await?,
        };
        dir.write(host_dir::ADDRESS, &format!("{address}\n"), 0o644)?;
        dir.write(
            host_dir::SSHD_CONFIG,
            &sshd::sshd_config(dir, address),
            0o644,
        )?;
        sshd::spawn(&self.tools, dir).await?;
        sshd::wait_ready(dir, address, READY_TIMEOUT, POLL_INTERVAL).await?;
        drop(lock);

        self.observe(dir, id).await.ok_or_else(|| {
            ProviderError::api(
                "start host",
                format!("host {id} answered once and then stopped"),
            )
        })
    }
}

/// Refuses roots that cannot be written into sshd_config and shell scripts
/// verbatim, and roots that the empty `/root` of every host would hide.
fn check_root(root: &Path) -> Result<(), ProviderError> {
    let Some(text) = root.to_str() else {
        return Err(config_error(format!(
            "root directory {} is not valid UTF-8",
            root.display()
        )));
    };
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"'\\%".contains(c))
    {
        return Err(config_error(format!(
            "root directory `{text}` must not contain whitespace, quotes, `\\` or `%`"
        )));
    }
    if root.starts_with("/root") {
        return Err(config_error(format!(
            "root directory `{text}` must not be under /root: every local host mounts an empty directory over /root"
        )));
    }
    Ok(())
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        HOST.provider
    }

    fn schema(&self, kind: &str) -> Result<&'static [AttributeSchema], ProviderError> {
        HOST.schema(kind)
    }

    fn normalize_desired(&self, _kind: &str, desired: &mut Attributes, current: &Attributes) {
        attrs::normalize_desired(desired, current);
    }

    async fn read(
        &self,
        kind: &str,
        ids: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError> {
        HOST.check(kind)?;
        read_each(ids, |id| async move {
            let dir = self.dir_for_id(id)?;
            Ok(self.observe(&dir, id).await)
        })
        .await
    }

    async fn find_by_token(
        &self,
        kind: &str,
        tokens: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError> {
        HOST.check(kind)?;
        let wanted: BTreeSet<&str> = tokens.iter().map(String::as_str).collect();
        let mut found = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.deployment_dir()) else {
            return Ok(found);
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| is_safe_name(name))
            .collect();
        names.sort();
        for name in names {
            let dir = HostDir::new(self.deployment_dir().join(&name));
            let Some(token) = dir.read(host_dir::TOKEN) else {
                continue;
            };
            if !wanted.contains(token.as_str()) {
                continue;
            }
            if let Some(observed) = self.observe(&dir, &self.id_for_name(&name)).await {
                found.insert(token, observed);
            }
        }
        Ok(found)
    }

    async fn create(&self, request: CreateRequest<'_>) -> Result<Observed, ProviderError> {
        HOST.check(request.kind)?;
        let started = Instant::now();
        let name = safe_name(request.address);
        if !is_safe_name(&name) {
            return Err(config_error(format!(
                "`{}` gives no usable directory name",
                request.address
            )));
        }
        let spec = attrs::parse_spec(request.address, request.attributes, &name)?;
        let dir = HostDir::new(self.deployment_dir().join(&name));
        let id = self.id_for_name(&name);
        if dir.exists() {
            if let Some(observed) = self.observe(&dir, &id).await {
                if dir.read(host_dir::TOKEN).as_deref() == Some(request.token) {
                    return Ok(observed);
                }
                return Err(ProviderError::Taken {
                    kind: KIND.to_owned(),
                    id,
                    place: dir.path().display().to_string(),
                    owner: dir.read(host_dir::RESOURCE).unwrap_or_default(),
                });
            }
            tracing::info!(dir = %dir.path().display(), "removing the stale directory of a dead host");
            self.destroy(&dir).await?;
        }
        let build = self.start(&dir, &request, &spec, &id);
        build_or_clean_up("host", &id, started, build, self.destroy(&dir)).await
    }

    async fn update(&self, request: UpdateRequest<'_>) -> Result<Observed, ProviderError> {
        HOST.check(request.kind)?;
        let dir = self.dir_for_id(request.id)?;
        let not_found = || HOST.not_found(request.id);
        if self.observe(&dir, request.id).await.is_none() {
            return Err(not_found());
        }
        check_in_place(
            request.changes,
            |name| name == attrs::AUTHORIZED_KEYS,
            "update host",
            "a local host",
        )?;
        let keys = attrs::authorized_keys(request.address, request.attributes)?;
        dir.write(
            host_dir::AUTHORIZED_KEYS,
            &attrs::authorized_keys_file(&keys),
            0o600,
        )?;
        self.observe(&dir, request.id).await.ok_or_else(not_found)
    }

    async fn delete(&self, kind: &str, id: &str) -> Result<(), ProviderError> {
        HOST.check(kind)?;
        let dir = self.dir_for_id(id)?;
        let started = Instant::now();
        self.destroy(&dir).await?;
        tracing::debug!(id, elapsed = ?started.elapsed(), "host deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(root: &Path) -> LocalProvider {
        let tools =
            check_environment("linux", true, |n| Some(PathBuf::from("/bin").join(n))).unwrap();
        let settings = LocalSettings {
            root: root.to_owned(),
        };
        LocalProvider::with_tools("dev", &settings, tools).unwrap()
    }

    #[test]
    fn ids_map_to_host_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let p = provider(tmp.path());
        let id = p.id_for(&Address::host("web", Some(0)));
        assert_eq!(id, "local-dev-web-0");
        let dir = p.dir_for_id(&id).unwrap();
        assert_eq!(dir.path(), p.root().join("dev/web-0"));
        for foreign in ["local-prod-web-0", "local-dev-", "local-dev-../x", "i-123"] {
            assert!(p.dir_for_id(foreign).is_err(), "{foreign}");
        }
    }

    #[test]
    fn rejects_bad_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let tools =
            check_environment("linux", true, |n| Some(PathBuf::from("/bin").join(n))).unwrap();
        let bad_name = LocalSettings {
            root: tmp.path().to_owned(),
        };
        assert!(LocalProvider::with_tools("1 bad", &bad_name, tools.clone()).is_err());
        let spaced = LocalSettings {
            root: tmp.path().join("a b"),
        };
        let err = LocalProvider::with_tools("dev", &spaced, tools).unwrap_err();
        assert!(err.to_string().contains("whitespace"), "{err}");
        assert!(check_root(Path::new("/root/x")).is_err());
        assert!(check_root(Path::new("/rootx/y")).is_ok());
    }

    #[tokio::test]
    async fn unknown_kind_and_missing_hosts() {
        let tmp = tempfile::tempdir().unwrap();
        let p = provider(tmp.path());
        assert!(matches!(
            p.schema("vm"),
            Err(ProviderError::UnknownKind { .. })
        ));
        let read = p.read(KIND, &["local-dev-nothing".into()]).await.unwrap();
        assert!(read.is_empty());
        p.delete(KIND, "local-dev-nothing").await.unwrap();
        assert!(p
            .find_by_token(KIND, &["t".into()])
            .await
            .unwrap()
            .is_empty());
    }
}
