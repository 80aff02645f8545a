//! The local provider against real namespace containers and a real sshd.
//! Needs root (mount, PID and UTS namespaces) and OpenSSH client and server.
//! Every test uses its own temporary root and deployment, and deletes its
//! hosts when it ends, failed or not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prov_provider::{
    Address, AttributeChange, Attributes, CreateRequest, Observed, Provider, ProviderError,
    UpdateRequest,
};
use prov_provider_local::{check_environment, LocalProvider, LocalSettings};
use serde_json::{json, Value};
use tempfile::TempDir;

const KIND: &str = "host";

/// A test's root directory and the hosts it made; deletes them on drop.
struct Hosts {
    deployment: String,
    settings: LocalSettings,
    ids: Mutex<Vec<String>>,
    dir: TempDir,
}

impl Hosts {
    fn new(test: &str) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests start namespace containers and must run as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let settings = LocalSettings {
            root: dir.path().join("root"),
        };
        Self {
            deployment: format!("{test}-{}", std::process::id()),
            settings,
            ids: Mutex::new(Vec::new()),
            dir,
        }
    }

    fn provider(&self) -> LocalProvider {
        LocalProvider::new(&self.deployment, &self.settings).unwrap()
    }

    /// A scratch directory for client keys.
    fn scratch(&self) -> &Path {
        self.dir.path()
    }

    async fn create(
        &self,
        provider: &LocalProvider,
        address: &Address,
        token: &str,
        attributes: Value,
    ) -> Result<Observed, ProviderError> {
        let attributes: Attributes = serde_json::from_value(attributes).unwrap();
        self.ids.lock().unwrap().push(provider.id_for(address));
        let start = Instant::now();
        let result = provider
            .create(CreateRequest {
                address,
                kind: KIND,
                token,
                attributes: &attributes,
            })
            .await;
        eprintln!("create {address}: {:?}", start.elapsed());
        result
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()));
        let settings = self.settings.clone();
        let deployment = self.deployment.clone();
        // A fresh thread: drop may run inside the test's runtime.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let provider = LocalProvider::new(&deployment, &settings).unwrap();
                for id in ids {
                    if let Err(e) = provider.delete(KIND, &id).await {
                        eprintln!("cleanup of {id} failed: {e}");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn web(index: u32) -> Address {
    Address::host("web", Some(index))
}

fn text(observed: &Observed, name: &str) -> String {
    observed.attributes[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is not a string in {observed:?}"))
        .to_owned()
}

fn pid_of(observed: &Observed) -> i32 {
    i32::try_from(observed.attributes["pid"].as_i64().unwrap()).unwrap()
}

/// Reads the SSH identification line from `address:22`.
fn banner(address: &str) -> String {
    let stream = TcpStream::connect((address, 22)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// A fresh client key pair; returns the private key's path and the public line.
fn client_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_owned())
}

fn ssh(key: &Path, address: &str, command: &str) -> Output {
    Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
            &format!("root@{address}"),
            command,
        ])
        .output()
        .unwrap()
}

/// The state letter of `/proc/PID/stat`, `None` when the pid is gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Live (non-zombie) processes whose command line mentions `dir`.
fn live_processes_mentioning(dir: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(&format!("{dir}/"))
                && !matches!(proc_state(*pid), Some('Z' | 'X') | None)
        })
        .collect()
}

/// Waits (at most 10 s) until `pid` has vanished from /proc: not alive, and
/// no zombie left either (PID 1 of this machine reaps orphans late).
fn wait_vanished(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..200 {
        match proc_state(pid) {
            None => return,
            Some('Z' | 'X') if Instant::now() < deadline => {}
            Some(state) => {
                assert!(
                    Instant::now() < deadline,
                    "pid {pid} still in state {state} after delete"
                );
                assert!(
                    matches!(state, 'Z' | 'X'),
                    "pid {pid} is alive (state {state}) after delete"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("pid {pid} did not vanish within 10 s");
}

async fn read_one(provider: &LocalProvider, id: &str) -> Option<Observed> {
    let mut found = provider.read(KIND, &[id.to_owned()]).await.unwrap();
    found.remove(id)
}

#[tokio::test]
async fn create_answers_with_the_generated_host_key() {
    let hosts = Hosts::new("keys");
    let provider = hosts.provider();
    let host = hosts
        .create(&provider, &web(0), "tok-keys", json!({"hostname": "web-0"}))
        .await
        .unwrap();
    let address = text(&host, "ssh_host");
    assert_eq!(text(&host, "address"), address);
    assert!(address.starts_with("127.0.0."), "{address}");
    assert_eq!(host.attributes["ssh_port"], json!(22));
    assert_eq!(host.id, provider.id_for(&web(0)));
    let root = text(&host, "root");
    assert!(root.ends_with("/web-0"), "{root}");
    assert!(banner(&address).starts_with("SSH-2.0-"));

    let host_key = text(&host, "host_key");
    assert!(host_key.starts_with("ssh-ed25519 AAAA"), "{host_key}");
    assert_eq!(host_key.split_whitespace().count(), 2, "{host_key}");
    let scan = Command::new("ssh-keyscan")
        .args(["-p", "22", "-t", "ed25519", &address])
        .output()
        .unwrap();
    let scanned = String::from_utf8_lossy(&scan.stdout);
    let presented: Vec<&str> = scanned
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no key from ssh-keyscan: {scanned}"))
        .split_whitespace()
        .collect();
    assert_eq!(presented[0], address);
    assert_eq!(presented[1..].join(" "), host_key);
}

#[tokio::test]
async fn ssh_login_sees_private_nix_keys_tmpfs_hostname_and_pid_namespace() {
    let hosts = Hosts::new("login");
    let provider = hosts.provider();
    let (key, public) = client_key(hosts.scratch(), "client");
    let host = hosts
        .create(
            &provider,
            &web(0),
            "tok-login",
            json!({"hostname": "login-web-0", "authorized_keys": [public]}),
        )
        .await
        .unwrap();
    let address = text(&host, "ssh_host");
    let probe = format!("probe-{}", std::process::id());
    let output = ssh(
        &key,
        &address,
        &format!(
            "hostname; ls /nix; mount | grep /run/keys; echo $$; touch /nix/store/{probe}; ls -A /root | wc -l"
        ),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ssh failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "login-web-0");
    assert_eq!(lines[1..3], ["store", "var"]);
    assert!(
        lines[3].starts_with("tmpfs on /run/keys type tmpfs") && lines[3].contains("mode=751"),
        "{}",
        lines[3]
    );
    let inner_pid: u32 = lines[4].parse().unwrap();
    assert!(
        inner_pid < 100,
        "the shell's pid {inner_pid} is not from a fresh PID namespace"
    );
    assert_eq!(
        lines[5], "0",
        "/root inside the host is not the empty directory"
    );

    let root = PathBuf::from(text(&host, "root"));
    assert!(root.join("nix/store").join(&probe).exists());
    if Path::new("/nix/store").is_dir() {
        assert!(
            !Path::new("/nix/store").join(&probe).exists(),
            "the probe leaked into the machine's /nix/store"
        );
    }
    let mut machine_hostname = String::new();
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        machine_hostname = name.trim().to_owned();
    }
    assert_ne!(machine_hostname, "login-web-0");
}

#[tokio::test]
async fn two_hosts_get_different_addresses_and_both_answer() {
    let hosts = Hosts::new("two");
    let provider = hosts.provider();
    let (web0, web1) = (web(0), web(1));
    let (first, second) = tokio::join!(
        hosts.create(&provider, &web0, "tok-a", json!({"hostname": "web-0"})),
        hosts.create(&provider, &web1, "tok-b", json!({"hostname": "web-1"})),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let (a, b) = (text(&first, "address"), text(&second, "address"));
    assert_ne!(a, b);
    assert!(banner(&a).starts_with("SSH-2.0-"));
    assert!(banner(&b).starts_with("SSH-2.0-"));
    assert_ne!(text(&first, "host_key"), text(&second, "host_key"));
    let ids = [first.id.clone(), second.id.clone()];
    let read = provider.read(KIND, &ids).await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[&first.id], first);
}

#[tokio::test]
async fn host_outlives_its_provider_and_is_found_by_token() {
    let hosts = Hosts::new("outlive");
    let host = {
        let provider = hosts.provider();
        hosts
            .create(
                &provider,
                &web(0),
                "tok-outlive",
                json!({"hostname": "web-0"}),
            )
            .await
            .unwrap()
    };
    let provider = hosts.provider();
    assert_eq!(read_one(&provider, &host.id).await.as_ref(), Some(&host));
    let found = provider
        .find_by_token(KIND, &["tok-outlive".into(), "tok-other".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found["tok-outlive"], host);
    // Creating again with the same token settles on the same host.
    let again = hosts
        .create(
            &provider,
            &web(0),
            "tok-outlive",
            json!({"hostname": "web-0"}),
        )
        .await
        .unwrap();
    assert_eq!(again, host);
    // Another token for a running host's directory is refused.
    let err = hosts
        .create(
            &provider,
            &web(0),
            "tok-intruder",
            json!({"hostname": "web-0"}),
        )
        .await
        .unwrap_err();
    match err {
        ProviderError::Taken { id, owner, .. } => {
            assert_eq!(id, host.id);
            assert_eq!(owner, "web[0]");
        }
        other => panic!("expected Taken, got {other}"),
    }
}

#[tokio::test]
async fn delete_removes_processes_and_directory() {
    let hosts = Hosts::new("delete");
    let provider = hosts.provider();
    let host = hosts
        .create(
            &provider,
            &web(0),
            "tok-delete",
            json!({"hostname": "web-0"}),
        )
        .await
        .unwrap();
    let root = text(&host, "root");
    let pid = pid_of(&host);
    let init_pid: i32 = std::fs::read_to_string(Path::new(&root).join("init.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!live_processes_mentioning(&root).is_empty());

    let start = Instant::now();
    provider.delete(KIND, &host.id).await.unwrap();
    eprintln!("delete {}: {:?}", host.id, start.elapsed());
    assert!(!Path::new(&root).exists(), "{root} is left");
    assert!(live_processes_mentioning(&root).is_empty());
    assert!(read_one(&provider, &host.id).await.is_none());
    assert!(provider
        .find_by_token(KIND, &["tok-delete".into()])
        .await
        .unwrap()
        .is_empty());
    wait_vanished(pid);
    wait_vanished(init_pid);
    // Deleting what is gone succeeds.
    provider.delete(KIND, &host.id).await.unwrap();
}

#[tokio::test]
async fn killed_host_reads_absent_and_is_recreated() {
    let hosts = Hosts::new("killed");
    let provider = hosts.provider();
    let host = hosts
        .create(
            &provider,
            &web(0),
            "tok-killed",
            json!({"hostname": "web-0"}),
        )
        .await
        .unwrap();
    let pid = pid_of(&host);
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while read_one(&provider, &host.id).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "a killed host still reads as present"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The core then creates it again; the stale directory is cleaned first.
    let again = hosts
        .create(
            &provider,
            &web(0),
            "tok-killed-2",
            json!({"hostname": "web-0"}),
        )
        .await
        .unwrap();
    assert_ne!(pid_of(&again), pid);
    assert_ne!(text(&again, "host_key"), text(&host, "host_key"));
    assert!(banner(&text(&again, "address")).starts_with("SSH-2.0-"));
}

#[tokio::test]
async fn update_of_authorized_keys_lets_a_new_key_log_in() {
    let hosts = Hosts::new("update");
    let provider = hosts.provider();
    let (first_key, first) = client_key(hosts.scratch(), "first");
    let (second_key, second) = client_key(hosts.scratch(), "second");
    let host = hosts
        .create(
            &provider,
            &web(0),
            "tok-update",
            json!({"hostname": "web-0", "authorized_keys": [first.clone()]}),
        )
        .await
        .unwrap();
    let address = text(&host, "address");
    assert!(ssh(&first_key, &address, "true").status.success());
    assert!(!ssh(&second_key, &address, "true").status.success());

    let attributes: Attributes = serde_json::from_value(
        json!({"hostname": "web-0", "authorized_keys": [first.clone(), second.clone()]}),
    )
    .unwrap();
    let changes = [AttributeChange {
        name: "authorized_keys".into(),
        before: Some(json!([first.clone()])),
        after: Some(attributes["authorized_keys"].clone()),
        after_unknown: false,
        forces_replacement: false,
    }];
    let updated = provider
        .update(UpdateRequest {
            address: &web(0),
            kind: KIND,
            id: &host.id,
            attributes: &attributes,
            changes: &changes,
        })
        .await
        .unwrap();
    assert_eq!(
        updated.attributes["authorized_keys"],
        json!([first, second])
    );
    assert_eq!(pid_of(&updated), pid_of(&host), "update must not restart");
    let output = ssh(&second_key, &address, "hostname");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "web-0");
    let mode = std::fs::metadata(Path::new(&text(&host, "root")).join("authorized_keys"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

#[tokio::test]
async fn explicit_address_is_used_and_a_taken_one_is_refused() {
    let hosts = Hosts::new("explicit");
    let provider = hosts.provider();
    let host = hosts
        .create(
            &provider,
            &web(0),
            "tok-explicit",
            json!({"hostname": "web-0", "address": "127.0.0.231"}),
        )
        .await
        .unwrap();
    assert_eq!(text(&host, "ssh_host"), "127.0.0.231");
    let err = hosts
        .create(
            &provider,
            &web(1),
            "tok-explicit-2",
            json!({"hostname": "web-1", "address": "127.0.0.231"}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Config { .. }), "{err}");
    // The failed create left nothing behind.
    let failed_dir = Path::new(&text(&host, "root")).with_file_name("web-1");
    assert!(!failed_dir.exists());
}

#[test]
fn non_root_is_a_config_error() {
    let all = |name: &str| Some(PathBuf::from("/usr/bin").join(name));
    let err = check_environment("linux", false, all).unwrap_err();
    assert!(matches!(err, ProviderError::Config { .. }), "{err}");
    assert!(err.to_string().contains("root"), "{err}");

    let without_sshd = |name: &str| (name != "sshd").then(|| PathBuf::from("/usr/bin").join(name));
    let err = check_environment("linux", true, without_sshd)
        .unwrap_err()
        .to_string();
    assert!(err.contains("openssh-server"), "{err}");
    assert!(check_environment("linux", true, all).is_ok());
}

#[tokio::test]
async fn failed_start_reports_the_log_and_leaves_nothing() {
    let hosts = Hosts::new("broken");
    let mut tools = check_environment("linux", true, prov_provider_local::find_program).unwrap();
    // `ls -D -f CONFIG -E LOG` exits at once complaining about `-E`.
    tools.sshd = PathBuf::from("/bin/ls");
    let provider = LocalProvider::with_tools(&hosts.deployment, &hosts.settings, tools).unwrap();
    let err = hosts
        .create(
            &provider,
            &web(0),
            "tok-broken",
            json!({"hostname": "web-0"}),
        )
        .await
        .unwrap_err()
        .to_string();
    eprintln!("{err}");
    assert!(err.contains("exited"), "{err}");
    assert!(err.contains("start.log") && err.contains("ls:"), "{err}");
    let dir = provider.root().join(provider.deployment()).join("web-0");
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(live_processes_mentioning(&dir.to_string_lossy()).is_empty());
}
