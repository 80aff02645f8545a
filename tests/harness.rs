//! Test harness: temporary workspaces, a moto server per test, the AWS CLI.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `prov` binary under test.
pub fn prov_bin() -> &'static str {
    env!("CARGO_BIN_EXE_prov")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A moto server on 127.0.0.1, killed when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto and waits (at most 30 s) until it answers.
    pub fn start() -> Self {
        let port = free_port();
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} (run scripts/setup.sh): {e}"));
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Runs the AWS CLI against this moto and returns its JSON output.
    pub fn aws(&self, args: &[&str]) -> serde_json::Value {
        let output = Command::new("aws")
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(["--output", "json"])
            .args(args)
            .envs(aws_env())
            .output()
            .expect("run the aws CLI (scripts/setup.sh installs it)");
        assert!(
            output.status.success(),
            "aws {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if output.stdout.iter().all(u8::is_ascii_whitespace) {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Keys under `prefix` in `bucket`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.aws(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            prefix,
        ]);
        out["Contents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| o["Key"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Running (or pending) instances tagged with `deployment`, as
    /// `(instance id, prov:address tag)`, sorted by address.
    pub fn instances(&self, deployment: &str) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = self
            .live_instances(deployment)
            .iter()
            .map(|(address, i)| {
                (
                    i["InstanceId"].as_str().unwrap().to_owned(),
                    address.clone(),
                )
            })
            .collect();
        found.sort_by(|a, b| a.1.cmp(&b.1));
        found
    }

    /// The not terminated instances tagged with `deployment`, as
    /// `(prov:address tag, DescribeInstances record)`.
    pub fn live_instances(&self, deployment: &str) -> Vec<(String, serde_json::Value)> {
        let filter = format!("Name=tag:prov:deployment,Values={deployment}");
        let out = self.aws(&[
            "ec2",
            "describe-instances",
            "--filters",
            &filter,
            "Name=instance-state-name,Values=pending,running,stopping,stopped",
        ]);
        let mut found = Vec::new();
        for reservation in out["Reservations"].as_array().unwrap() {
            for instance in reservation["Instances"].as_array().unwrap() {
                let address = instance["Tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["Key"] == "prov:address")
                    .and_then(|t| t["Value"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                found.push((address, instance.clone()));
            }
        }
        found
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dummy credentials and region for moto.
pub fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// A temporary directory holding a spec, where `prov` runs. Local hosts it
/// creates live under its own root (`PROV_LOCAL_ROOT`) and are killed when
/// it is dropped.
pub struct Workspace {
    dir: tempfile::TempDir,
    /// The moto endpoint given to prov as AWS_ENDPOINT_URL, if any.
    pub endpoint: Option<String>,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        kill_local_hosts(&self.local_root());
    }
}

/// Kills every local host under `root` (outer and init processes) so no
/// sshd outlives its test.
pub fn kill_local_hosts(root: &Path) {
    let Ok(deployments) = std::fs::read_dir(root) else {
        return;
    };
    for deployment in deployments.flatten() {
        let Ok(hosts) = std::fs::read_dir(deployment.path()) else {
            continue;
        };
        for host in hosts.flatten() {
            for file in ["pid", "init.pid"] {
                if let Ok(pid) = std::fs::read_to_string(host.path().join(file)) {
                    let _ = Command::new("kill").args(["-9", pid.trim()]).output();
                }
            }
        }
    }
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            endpoint: None,
        }
    }

    /// A workspace whose prov talks to `moto`.
    pub fn with_moto(moto: &Moto) -> Self {
        let mut ws = Self::new();
        ws.endpoint = Some(moto.endpoint.clone());
        ws
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where this workspace's local hosts live.
    pub fn local_root(&self) -> PathBuf {
        self.path().join("hosts")
    }

    /// The directory of local host `name` (`web-0`) of `deployment`.
    pub fn host_dir(&self, deployment: &str, name: &str) -> PathBuf {
        self.local_root().join(deployment).join(name)
    }

    /// Copies `examples/NAME` into the workspace.
    pub fn copy_example(&self, name: &str) -> &Self {
        std::fs::copy(repo().join("examples").join(name), self.path().join(name)).unwrap();
        self
    }

    /// Writes `prov.toml` (or another file).
    pub fn write(&self, name: &str, contents: &str) -> &Self {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, contents).unwrap();
        self
    }

    /// A `prov` command in this workspace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(prov_bin());
        command
            .args(args)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("PROV_LOG")
            .env_remove("PROV_STATE_DIR")
            // A run on GitHub Actions must not append to the runner's file.
            .env_remove("GITHUB_OUTPUT")
            .env("PROV_LOCAL_ROOT", self.local_root())
            .envs(aws_env())
            .stdin(Stdio::null());
        match &self.endpoint {
            Some(endpoint) => command.env("AWS_ENDPOINT_URL", endpoint),
            None => command.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        };
        command
    }

    /// Runs `prov ARGS` to completion.
    pub fn prov(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().unwrap();
        Run::from(output, args)
    }

    /// Runs `prov ARGS` and asserts it exits 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.prov(args);
        assert_eq!(run.code, 0, "prov {args:?} failed:\n{run}");
        run
    }

    /// `prov state pull` as JSON.
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", "pull"]).stdout).unwrap()
    }
}

/// The [`Run`] of a finished `prov ARGS`.
pub fn run_from(output: Output, args: &[&str]) -> Run {
    Run::from(output, args)
}

/// The outcome of one `prov` run.
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    args: String,
}

impl Run {
    fn from(output: Output, args: &[&str]) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            args: args.join(" "),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ prov {}\nexit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

/// A small EC2 spec: `count` web instances, a key pair, a security group.
pub fn ec2_spec(deployment: &str, count: u32, instance_type: &str, ami: &str) -> String {
    format!(
        r#"deployment = "{deployment}"

[providers.ec2]
region = "us-east-1"

[key_pairs.deploy]
public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBztx5z6E+BsKT1rOWLRrTKL3Iz0o+A3cm1fDwXnElVW test"

[security_groups.web]
description = "web"

[[security_groups.web.ingress]]
protocol = "tcp"
from_port = 22
to_port = 22
cidr_blocks = ["203.0.113.0/24"]

[hosts.web]
target = "ec2"
count = {count}
ami = "{ami}"
instance_type = "{instance_type}"
key_pair = "deploy"
security_groups = ["web"]
tags = {{ role = "web" }}
"#
    )
}

/// Builds attribute `attr` of Nix file `file` in `dir` and returns its store
/// path.
pub fn nix_build(dir: &Path, file: &str, attr: &str) -> String {
    let out = Command::new("nix-build")
        .args([file, "-A", attr, "--no-out-link"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-build {file} -A {attr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls `probe` every 50 ms until it returns something or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGINT (what Ctrl-C sends) to process `pid`.
pub fn sigint(pid: u32) {
    signal(pid, "INT");
}

/// Sends signal `name` (`INT`, `TERM`, `KILL`) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Waits for `child` to exit and collects its output; SIGKILLs it when it
/// is still running after `limit` (its exit code is then -1). Output still
/// held open by processes it left behind is read for at most two seconds.
pub fn wait_exit(mut child: Child, limit: Duration) -> Output {
    fn drain(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::sync::mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(mut pipe) = pipe {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let _ = tx.send(chunk[..n].to_vec());
                }
            });
        }
        rx
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_for(limit, || child.try_wait().unwrap()).unwrap_or_else(|| {
        let _ = child.kill();
        child.wait().unwrap()
    });
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut out = Vec::new();
        while let Ok(chunk) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            out.extend(chunk);
        }
        out
    };
    Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}
