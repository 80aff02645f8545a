//! A throwaway OpenSSH server on 127.0.0.1 for tests: its own host key,
//! authorized keys and log in a temporary directory, killed on drop.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ssh::{Auth, HostKeyCheck, Target};

/// A running sshd; the client key `id_ed25519` in its directory is authorized for root.
pub(super) struct Sshd {
    dir: tempfile::TempDir,
    pub(super) port: u16,
    child: Child,
}

impl Sshd {
    /// Starts a server (retrying on a port race) and waits until it listens.
    pub(super) fn start() -> Sshd {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Sshd::try_start() {
                Ok(sshd) => return sshd,
                Err(log) => last_log = log,
            }
        }
        panic!("sshd did not start; its log:\n{last_log}");
    }

    /// One attempt on a fresh port; the log on failure.
    fn try_start() -> Result<Sshd, String> {
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("host_key"), "ed25519");
        keygen(&dir.path().join("id_ed25519"), "ed25519");
        fs_err::copy(
            dir.path().join("id_ed25519.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        fs_err::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        fs_err::write(dir.path().join("sshd_config"), config(dir.path(), port)).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-f"])
            .arg(dir.path().join("sshd_config"))
            .arg("-E")
            .arg(dir.path().join("log"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut sshd = Sshd { dir, port, child };
        if sshd.wait_listening() {
            Ok(sshd)
        } else {
            Err(sshd.log())
        }
    }

    /// True once the port accepts connections, false if sshd exited or 10 s passed.
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// A file in the server's directory.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server's log so far.
    pub(super) fn log(&self) -> String {
        let mut log = String::new();
        if let Ok(mut file) = std::fs::File::open(self.path("log")) {
            let _ = file.read_to_string(&mut log);
        }
        log
    }

    /// Waits (≤ 5 s) until some line of the log satisfies `wanted`; returns the log either way.
    pub(super) fn wait_for_log(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.lines().any(&wanted) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The host's public key, first two fields of `host_key.pub`.
    pub(super) fn host_key(&self) -> String {
        public_key_line(&self.path("host_key.pub"))
    }

    /// `HostKeyCheck::Pinned` with the right key.
    pub(super) fn pinned(&self) -> HostKeyCheck {
        HostKeyCheck::Pinned(self.host_key())
    }

    /// root@127.0.0.1:PORT.
    pub(super) fn target(&self) -> Target {
        Target::new("127.0.0.1", self.port, "root")
    }

    /// The authorized client key, no agent.
    pub(super) fn auth(&self) -> Auth {
        Auth {
            identity_files: vec![self.path("id_ed25519")],
            ..Auth::default()
        }
    }

    /// Appends a public key file to the authorized keys.
    pub(super) fn authorize(&self, public_key: &Path) {
        let mut keys = fs_err::read_to_string(self.path("authorized_keys")).unwrap();
        keys.push_str(&fs_err::read_to_string(public_key).unwrap());
        fs_err::write(self.path("authorized_keys"), keys).unwrap();
    }

    /// Kills the per-connection sshd processes (the listener's children), dropping their clients.
    pub(super) fn kill_sessions(&self) {
        let pid = self.child.id();
        let children = fs_err::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        for child in children.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", child]).status();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {dir}/host_key\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         PermitRootLogin prohibit-password\n\
         PidFile {dir}/sshd.pid\n\
         UsePAM no\n\
         StrictModes no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         AllowTcpForwarding yes\n\
         LogLevel DEBUG1\n"
    )
}

/// `ssh-keygen -q -t KIND -N '' -f PATH`.
pub(super) fn keygen(path: &Path, kind: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

/// The first two fields of a `.pub` file: `"ssh-ed25519 AAAA…"`.
pub(super) fn public_key_line(path: &Path) -> String {
    let text = fs_err::read_to_string(path).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A port nobody listens on right now.
pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An ssh-agent on its own socket holding `key`, killed on drop.
pub(super) struct Agent {
    pub(super) socket: PathBuf,
    child: Child,
}

impl Agent {
    /// Starts `ssh-agent -D -a SOCKET` in `dir` and adds `key` to it.
    pub(super) fn start(dir: &Path, key: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let agent = Agent { socket, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(25));
        }
        let status = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "ssh-add failed");
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
