//! Tests against the real thing: openssl verifies every chain and name,
//! real etcd serves prov's certificates with client-certificate auth, and
//! kubectl reaches a TLS stand-in for the apiserver with the admin
//! kubeconfig. Every wait is bounded; every process started is killed.

mod etcd;
mod kubectl;
mod openssl;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use super::files::HostFile;

/// Writes `files` under `root` as they would lie on the host (modes too;
/// owners are the host's business).
fn install(root: &Path, files: &[HostFile]) {
    for file in files {
        let path = on_host(root, &file.path);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(&path, file.content.expose()).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(file.mode)).unwrap();
    }
}

/// Where host path `path` lies under `root`.
fn on_host(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// A free TCP port on 127.0.0.1 (free when asked; the OS does not hand it
/// out again at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `command`, returning its output.
fn output(command: &mut Command) -> Output {
    command.output().unwrap()
}

/// Polls `ready` every 200 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A child process killed (and reaped) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
