//! The processes behind a host: recognising, checking and killing them.
//!
//! A host's processes are recognised by their command lines, which name files
//! in the host directory: the outer `unshare … /bin/sh HOSTDIR/init.sh`, the
//! namespace's init (`/bin/sh HOSTDIR/init.sh` until it execs `sshd -D -f
//! HOSTDIR/sshd_config …`) and, for a moment at start, `/bin/sh
//! HOSTDIR/run.sh`. This guards every pid read from a file against reuse by
//! an unrelated process. While a process execs, its command line reads empty
//! for a moment; recorded pids then count as the host's (see
//! [`may_be_host_process`]). Zombies count as gone: PID 1 of some machines reaps
//! orphans late, and a zombie holds no namespace, mount or socket.

use std::path::Path;
use std::time::{Duration, Instant};

use prov_provider::ProviderError;
use rustix::process::{kill_process, Pid, Signal};

use crate::host_dir::{self, HostDir};

/// What `/proc` says about a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessState {
    /// Running or sleeping: alive.
    Alive,
    /// Exited but not yet reaped (state `Z` or `X`).
    Zombie,
    /// No such process.
    Gone,
}

/// Reads the state letter of `/proc/PID/stat` (the field after the command
/// name, which is in parentheses and may itself contain spaces and `)`).
pub(crate) fn state(pid: i32) -> ProcessState {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcessState::Gone;
    };
    parse_state(&stat)
}

fn parse_state(stat: &str) -> ProcessState {
    let letter = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .and_then(|rest| rest.trim_start().chars().next());
    match letter {
        Some('Z' | 'X' | 'x') => ProcessState::Zombie,
        Some(_) => ProcessState::Alive,
        None => ProcessState::Gone,
    }
}

/// The arguments of a process (empty for zombies and kernel threads).
fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a command line belongs to the host living in `dir`.
pub(crate) fn is_host_command(args: &[String], dir: &Path) -> bool {
    let script = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (init, run) = (script(host_dir::INIT_SCRIPT), script(host_dir::RUN_SCRIPT));
    if args.iter().any(|arg| *arg == init || *arg == run) {
        return true;
    }
    // sshd rewrites its title ("sshd: /usr/sbin/sshd -D -f CONFIG … [listener]"),
    // so look for `-f CONFIG` in the joined words.
    let is_sshd = args.first().is_some_and(|first| {
        first.starts_with("sshd") || Path::new(first).file_name().is_some_and(|n| n == "sshd")
    });
    let joined = format!("{} ", args.join(" "));
    is_sshd && joined.contains(&format!("-f {} ", script(host_dir::SSHD_CONFIG)))
}

/// Whether `pid` is alive (not a zombie) and one of the processes of the host
/// in `dir`.
pub(crate) fn is_host_process(pid: i32, dir: &Path) -> bool {
    state(pid) == ProcessState::Alive && is_host_command(&cmdline(pid), dir)
}

/// Like [`is_host_process`], but also true for a live process with an empty
/// command line: a process in the middle of `execve` briefly shows none, and
/// the recorded pids exec (`sh run.sh` → `unshare`, `sh init.sh` → `sshd`).
/// Only for pids read from the host's own files.
pub(crate) fn may_be_host_process(pid: i32, dir: &Path) -> bool {
    if state(pid) != ProcessState::Alive {
        return false;
    }
    let args = cmdline(pid);
    args.is_empty() || is_host_command(&args, dir)
}

/// Every live process of the host in `dir`, found by scanning `/proc`.
fn scan_host_processes(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| is_host_process(*pid, dir))
        .collect()
}

/// The live processes of a host: the recorded outer pid and namespace init
/// (when they still are the host's) and whatever else `/proc` shows.
fn host_processes(dir: &HostDir) -> Vec<i32> {
    let mut pids: Vec<i32> = [host_dir::PID, host_dir::INIT_PID]
        .iter()
        .filter_map(|name| dir.read_pid(name))
        .filter(|pid| may_be_host_process(*pid, dir.path()))
        .collect();
    pids.extend(scan_host_processes(dir.path()));
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Sends SIGKILL; a process that is already gone is fine.
fn kill(pid: i32) {
    let Some(target) = Pid::from_raw(pid) else {
        return;
    };
    if let Err(error) = kill_process(target, Signal::KILL) {
        if error != rustix::io::Errno::SRCH {
            tracing::warn!(pid, %error, "cannot kill a host process");
        }
    }
}

/// Kills every process of the host in `dir` with SIGKILL and waits until none
/// is alive (zombies count as gone), looking every `interval` for at most
/// `timeout`. Killing the namespace's init makes the kernel kill everything
/// else in the PID namespace; the mounts go with the last process.
pub(crate) async fn kill_host(
    dir: &HostDir,
    timeout: Duration,
    interval: Duration,
) -> Result<(), ProviderError> {
    let start = Instant::now();
    loop {
        let pids = host_processes(dir);
        if pids.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(ProviderError::Timeout {
                what: format!(
                    "the processes {pids:?} of host {} to exit",
                    dir.path().display()
                ),
                seconds: timeout.as_secs(),
            });
        }
        tracing::debug!(?pids, dir = %dir.path().display(), "killing host processes");
        for pid in pids {
            kill(pid);
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_state_after_odd_command_names() {
        assert_eq!(parse_state("42 (sh) S 1 42"), ProcessState::Alive);
        assert_eq!(parse_state("42 (a) b) Z 1 42"), ProcessState::Zombie);
        assert_eq!(parse_state("garbage"), ProcessState::Gone);
        assert_eq!(state(std::process::id() as i32), ProcessState::Alive);
    }

    #[test]
    fn recognises_host_commands_only_for_their_dir() {
        let dir = Path::new("/var/lib/prov/local/d/web-0");
        let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let outer = words(
            "/usr/bin/unshare --mount --pid --fork /bin/sh /var/lib/prov/local/d/web-0/init.sh",
        );
        assert!(is_host_command(&outer, dir));
        let title = vec!["sshd: /usr/sbin/sshd -D -f /var/lib/prov/local/d/web-0/sshd_config -E /var/lib/prov/local/d/web-0/sshd.log [listener] 0 of 100-100 startups".to_owned()];
        assert!(is_host_command(&title, dir));
        let other = Path::new("/var/lib/prov/local/d/web-0x");
        assert!(!is_host_command(&outer, other));
        assert!(!is_host_command(&title, other));
        let reader = words("less /var/lib/prov/local/d/web-0/sshd_config");
        assert!(!is_host_command(&reader, dir));
    }
}
