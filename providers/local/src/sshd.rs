//! Starting a host: host key, sshd configuration, start scripts, readiness.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use prov_provider::shell::quote_always;
use prov_provider::ProviderError;

use crate::error::io_error;
use crate::host_dir::{self, HostDir};
use crate::process;
use crate::{Tools, SSH_PORT};

/// Generates the host's ed25519 host key (`ssh_host_ed25519_key` and its
/// `.pub`, as ssh-keygen writes them) and returns its public half as
/// `ssh-ed25519 AAAA…` (no comment).
pub(crate) fn generate_host_key(dir: &HostDir) -> Result<String, ProviderError> {
    let key = prov_provider::keys::generate_files(&dir.file(host_dir::HOST_KEY), "")?;
    Ok(key.public)
}

/// The public host key as `TYPE BASE64`, read from `ssh_host_ed25519_key.pub`.
pub(crate) fn read_host_key(dir: &HostDir) -> Option<String> {
    let text = dir.read(&format!("{}.pub", host_dir::HOST_KEY))?;
    let mut words = text.split_whitespace();
    Some(format!("{} {}", words.next()?, words.next()?))
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The sshd configuration of a host listening on `address`. Paths are
/// double-quoted; the provider refuses roots that would need escaping.
pub(crate) fn sshd_config(dir: &HostDir, address: Ipv4Addr) -> String {
    let file = |name: &str| path_str(&dir.file(name));
    format!(
        "# Written by prov (local provider).\n\
         ListenAddress {address}\n\
         Port {SSH_PORT}\n\
         HostKey \"{host_key}\"\n\
         AuthorizedKeysFile \"{authorized_keys}\"\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PidFile \"{pid_file}\"\n\
         UsePAM no\n\
         StrictModes no\n\
         MaxStartups 100\n\
         MaxSessions 100\n\
         Subsystem sftp internal-sftp\n",
        host_key = file(host_dir::HOST_KEY),
        authorized_keys = file(host_dir::AUTHORIZED_KEYS),
        pid_file = file("sshd.pid"),
    )
}

/// The script `setsid --fork` runs. It records its own pid and then execs
/// `unshare`, so the recorded pid *is* the outer `unshare` process.
///
/// Why this way: `setsid --fork` forks and its parent exits at once, so the
/// pid prov spawned is gone before the host is up; `unshare --fork` forks
/// again for the namespace's init. `$$` written just before `exec` is the one
/// pid that stays the host's outer process for its whole life, needs no
/// searching, and `unshare --kill-child` ties the namespace's init (and with
/// it the whole PID namespace) to it. The init records its own pid too, read
/// from `/proc/self/stat` — the machine's procfs, so the pid the machine sees.
pub(crate) fn run_script(tools: &Tools, dir: &HostDir) -> String {
    format!(
        "# Written by prov (local provider): the outer process of this host.\n\
         echo $$ > {pid}\n\
         exec {unshare} --mount --uts --pid --fork --kill-child --propagation private /bin/sh {init}\n",
        pid = quote_always(&path_str(&dir.file(host_dir::PID))),
        unshare = quote_always(&path_str(&tools.unshare)),
        init = quote_always(&path_str(&dir.file(host_dir::INIT_SCRIPT))),
    )
}

/// Top-level directories of the machine that are not made private by an
/// overlay: kernel filesystems, and the ones each host already has its own
/// of (`/nix`, `/root`, `/run`, where `/run/keys` is a private tmpfs).
const NOT_OVERLAID: &[&str] = &["proc", "sys", "dev", "run", "nix", "root", "lost+found"];

/// The machine's top-level directories a host gets a private overlay of:
/// every real directory of `/` (not symlinks such as Debian's `/bin`) but
/// those of [`NOT_OVERLAID`], and only names a shell script can hold as
/// they are. Sorted, so the init script is the same for the same machine.
pub(crate) fn overlaid_tops() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/") else {
        return Vec::new();
    };
    let mut tops: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            !NOT_OVERLAID.contains(&name.as_str())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
        .collect();
    tops.sort();
    tops
}

/// The script that runs as PID 1 of the host's namespaces: private `/nix`,
/// `/run/keys` and `/root`, a private overlay of every other top-level
/// directory in `tops` (the machine's files below, the host's writes in
/// `layers/DIR/upper` of its own directory), the hostname, then sshd in the
/// foreground.
///
/// The overlays are mounted from a bind of the host directory under the
/// host's `/root`, and that bind is then moved back onto the host directory:
/// so the upper layers never sit on an overlay themselves, and the host
/// directory (sshd's config, log and pid file) stays the machine's real
/// one, also when it lies inside an overlaid directory such as `/var`.
pub(crate) fn init_script(tools: &Tools, dir: &HostDir, hostname: &str, tops: &[String]) -> String {
    let q = |path: &Path| quote_always(&path_str(path));
    let mount = q(&tools.mount);
    let host = q(dir.path());
    let staged = "/root/.prov-host";
    let mut overlays = String::new();
    for top in tops {
        let layer = format!("{staged}/{}/{top}", host_dir::LAYERS);
        overlays.push_str(&format!(
            "mkdir -p {upper} {work}
             {mount} -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={work} {lower}
",
            upper = quote_always(&format!("{layer}/upper")),
            work = quote_always(&format!("{layer}/work")),
            lower = quote_always(&format!("/{top}")),
        ));
    }
    format!(
        "# Written by prov (local provider): PID 1 of this host.\n\
         set -e\n\
         read -r pid rest < /proc/self/stat\n\
         echo \"$pid\" > {init_pid}\n\
         {mount} --bind {nix} /nix\n\
         {mount} -t tmpfs -o mode=0751 tmpfs /run/keys\n\
         {mount} --bind {home} /root\n\
         mkdir -p {staged}\n\
         {mount} --bind {host} {staged}\n\
         {overlays}\
         {mount} --move {staged} {host}\n\
         rmdir {staged}\n\
         printf %s {hostname} > /proc/sys/kernel/hostname\n\
         exec {sshd} -D -f {config} -E {log}\n",
        init_pid = q(&dir.file(host_dir::INIT_PID)),
        nix = q(&dir.file(host_dir::NIX)),
        home = q(&dir.file(host_dir::HOME)),
        hostname = quote_always(hostname),
        sshd = q(&tools.sshd),
        config = q(&dir.file(host_dir::SSHD_CONFIG)),
        log = q(&dir.file(host_dir::SSHD_LOG)),
    )
}

/// Starts the host detached from prov (`setsid --fork`, stdin from
/// `/dev/null`, output to `start.log`, an empty environment but `PATH`), so
/// it outlives the prov process. Returns once `setsid` has forked.
pub(crate) async fn spawn(tools: &Tools, dir: &HostDir) -> Result<(), ProviderError> {
    let log_path = dir.file(host_dir::START_LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io_error("open start log", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| io_error("open start log", &log_path, e))?;
    let status = tokio::process::Command::new(&tools.setsid)
        .arg("--fork")
        .arg("/bin/sh")
        .arg(dir.file(host_dir::RUN_SCRIPT))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .status()
        .await
        .map_err(|e| io_error("run setsid", &tools.setsid, e))?;
    if status.success() {
        Ok(())
    } else {
        Err(ProviderError::api(
            "start host",
            format!("setsid exited with {status}"),
        ))
    }
}

/// Connects to `address:22` and reads the SSH identification line; `Some`
/// (the line) when it starts with `SSH-2.0`.
pub(crate) async fn probe(address: Ipv4Addr, timeout: Duration) -> Option<String> {
    prov_provider::machine::probe(SocketAddr::from((address, SSH_PORT)), timeout).await
}

/// Waits until the host's sshd answers on `address` with an SSH banner,
/// looking every `interval` for at most `timeout`; fails early when the
/// host's processes die.
pub(crate) async fn wait_ready(
    dir: &HostDir,
    address: Ipv4Addr,
    timeout: Duration,
    interval: Duration,
) -> Result<(), ProviderError> {
    let start = Instant::now();
    loop {
        let pid = dir.read_pid(host_dir::PID);
        if let Some(pid) = pid {
            if !process::may_be_host_process(pid, dir.path()) {
                return Err(start_failure(
                    dir,
                    &format!("the host's process {pid} exited"),
                ));
            }
            if probe(address, interval.max(Duration::from_millis(500)))
                .await
                .is_some()
            {
                // The banner could come from a foreign sshd only if one had
                // bound the address after the allocation check; ours being
                // still alive rules that out (it would have failed to bind).
                if process::is_host_process(pid, dir.path()) {
                    return Ok(());
                }
            }
        }
        if start.elapsed() >= timeout {
            return Err(start_failure(
                dir,
                &format!(
                    "sshd did not answer on {address}:{SSH_PORT} within {} s",
                    timeout.as_secs()
                ),
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

/// A start failure with the last lines of the host's logs.
fn start_failure(dir: &HostDir, what: &str) -> ProviderError {
    let mut message = what.to_owned();
    for name in [host_dir::SSHD_LOG, host_dir::START_LOG] {
        if let Some(tail) = log_tail(&dir.file(name), 15) {
            message.push_str(&format!("\n--- last lines of {name} ---\n{tail}"));
        }
    }
    ProviderError::api("start host", message)
}

/// The last `lines` lines of a log file, if it has any.
fn log_tail(path: &Path, lines: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let all: Vec<&str> = text.lines().collect();
    let tail = all.get(all.len().saturating_sub(lines)..)?.join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tools() -> Tools {
        Tools {
            unshare: "/usr/bin/unshare".into(),
            setsid: "/usr/bin/setsid".into(),
            mount: "/usr/bin/mount".into(),
            sshd: "/usr/sbin/sshd".into(),
        }
    }

    #[test]
    fn renders_config_and_scripts() {
        let dir = HostDir::new(PathBuf::from("/r/d/web-0"));
        let config = sshd_config(&dir, Ipv4Addr::new(127, 0, 0, 7));
        assert!(config.contains("ListenAddress 127.0.0.7\nPort 22\n"));
        assert!(config.contains("AuthorizedKeysFile \"/r/d/web-0/authorized_keys\"\n"));
        assert!(config.contains("MaxSessions 100\n"));
        assert!(!config.contains("SetEnv"));
        let run = run_script(&tools(), &dir);
        assert!(run.contains("echo $$ > '/r/d/web-0/pid'\nexec '/usr/bin/unshare' --mount --uts --pid --fork --kill-child"));
        let init = init_script(
            &tools(),
            &dir,
            "it's",
            &["etc".to_owned(), "var".to_owned()],
        );
        assert!(init.contains("'/usr/bin/mount' --bind '/r/d/web-0' /root/.prov-host\n"));
        assert!(init.contains("'/usr/bin/mount' -t overlay overlay -o lowerdir='/etc',upperdir='/root/.prov-host/layers/etc/upper',workdir='/root/.prov-host/layers/etc/work' '/etc'\n"));
        assert!(init.contains("'/usr/bin/mount' --move /root/.prov-host '/r/d/web-0'\n"));
        assert!(init.find("lowerdir='/var'") < init.find("--move"));
        assert!(init.contains("printf %s 'it'\\''s' > /proc/sys/kernel/hostname"));
        assert!(init.contains("exec '/usr/sbin/sshd' -D -f '/r/d/web-0/sshd_config'"));
    }

    #[test]
    fn tails_logs() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("l");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&log, 2).as_deref(), Some("b\nc"));
        assert_eq!(log_tail(&tmp.path().join("none"), 2), None);
    }
}
