//! Deploy benchmark. Prints figures; asserts nothing.
//!
//! `cargo bench --bench deploy` (as root, with nix-bin and openssh: see
//! scripts/setup.sh) builds a stand-in system of 102 store paths and about
//! 100 MiB and deploys it to 8 local hosts three ways:
//! 1. `prov apply` (parallel over hosts, only missing paths, one SSH stream each);
//! 2. `nix copy --to ssh://…` run host after host;
//! 3. `nix copy --to ssh://…` run for all 8 hosts at once.
//!
//! It prints wall time and bytes sent for each, and the time of prov's
//! no-change re-apply. Environment: `PROV_BENCH_HOSTS` (default 8),
//! `PROV_BENCH_SHARED_PATHS` (100), `PROV_BENCH_PATH_KIB` (1024).

// A benchmark is a test program: a failed setup step should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn prov(dir: &Path, root: &Path, args: &[&str]) -> (Duration, String) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_prov"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("PROV_LOCAL_ROOT", root)
        .stdin(Stdio::null())
        .output()
        .expect("run prov");
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "prov {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (took, String::from_utf8_lossy(&output.stdout).into_owned())
}

fn spec(deployment: &str, hosts: u64, with_system: bool) -> String {
    let system = if with_system {
        "nix = { file = \"bench.nix\", attr = \"system\" }\n"
    } else {
        ""
    };
    format!("deployment = \"{deployment}\"\n\n[hosts.node]\ntarget = \"local\"\ncount = {hosts}\n{system}")
}

/// Kills every local host under the root when dropped, even after a panic.
struct Hosts(PathBuf);

impl Drop for Hosts {
    fn drop(&mut self) {
        let Ok(deployments) = std::fs::read_dir(&self.0) else {
            return;
        };
        for deployment in deployments.flatten() {
            for host in std::fs::read_dir(deployment.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                for file in ["pid", "init.pid"] {
                    if let Ok(pid) = std::fs::read_to_string(host.path().join(file)) {
                        let _ = Command::new("kill").args(["-9", pid.trim()]).output();
                    }
                }
            }
        }
    }
}

/// Creates `hosts` bare local hosts for deployment `name` (with its own state
/// directory); returns their addresses.
fn bare_hosts(dir: &Path, root: &Path, name: &str, hosts: u64) -> Vec<String> {
    std::fs::write(dir.join(format!("{name}.toml")), spec(name, hosts, false)).unwrap();
    let (spec_file, state) = (format!("{name}.toml"), format!(".prov-{name}"));
    prov(
        dir,
        root,
        &[
            "-f",
            &spec_file,
            "--state-dir",
            &state,
            "apply",
            "--auto-approve",
        ],
    );
    (0..hosts)
        .map(|i| {
            std::fs::read_to_string(root.join(name).join(format!("node-{i}")).join("address"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect()
}

fn nix_copy(key: &Path, address: &str, path: &str) -> Command {
    let mut command = Command::new("nix");
    command
        .args(["--extra-experimental-features", "nix-command", "copy", "--to"])
        .arg(format!("ssh://root@{address}"))
        .arg(path)
        .env(
            "NIX_SSHOPTS",
            format!("-i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR", key.display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let hosts = env_or("PROV_BENCH_HOSTS", 8);
    let shared = env_or("PROV_BENCH_SHARED_PATHS", 100);
    let kib = env_or("PROV_BENCH_PATH_KIB", 1024);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let root: PathBuf = dir.join("hosts");
    let _hosts = Hosts(root.clone());
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/systems.nix"),
        dir.join("systems.nix"),
    )
    .unwrap();
    std::fs::write(
        dir.join("bench.nix"),
        format!("{{ system = (import ./systems.nix).mkSystem {{ name = \"bench\"; sharedPaths = {shared}; sharedKiB = {kib}; payloadKiB = {kib}; }}; }}\n"),
    )
    .unwrap();
    let built = Command::new("nix-build")
        .args(["bench.nix", "-A", "system", "--no-out-link"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let system = String::from_utf8(built.stdout).unwrap().trim().to_owned();
    let requisites = Command::new("nix-store")
        .args(["-qR", &system])
        .output()
        .unwrap();
    let paths: Vec<String> = String::from_utf8(requisites.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let sizes = Command::new("nix-store")
        .args(["-q", "--size"])
        .args(&paths)
        .output()
        .unwrap();
    let closure_bytes: u64 = String::from_utf8(sizes.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum();
    println!(
        "closure: {} paths, {:.1} MiB; {hosts} local hosts; machine has {} cores",
        paths.len(),
        mib(closure_bytes),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. prov: hosts first (not timed), then the deploy.
    std::fs::write(dir.join("prov.toml"), spec("bench", hosts, false)).unwrap();
    prov(dir, &root, &["apply", "--auto-approve"]);
    std::fs::write(dir.join("prov.toml"), spec("bench", hosts, true)).unwrap();
    let (_, plan) = prov(dir, &root, &["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let planned: u64 = plan["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["bytes"].as_u64().unwrap())
        .sum();
    let (took, _) = prov(
        dir,
        &root,
        &[
            "apply",
            "--auto-approve",
            "--parallelism",
            &hosts.to_string(),
        ],
    );
    println!(
        "prov apply (copy + activate, {hosts} hosts in parallel): {:>6.2} s, {:.1} MiB sent",
        took.as_secs_f64(),
        mib(planned)
    );
    let (noop, out) = prov(dir, &root, &["apply", "--auto-approve"]);
    assert!(out.contains("No changes."), "{out}");
    println!(
        "prov apply with nothing to do:                         {:>6.2} s",
        noop.as_secs_f64()
    );
    let key = dir.join(".prov/ssh/id_ed25519");

    // 2. nix copy, host after host.
    let addresses = bare_hosts(dir, &root, "seq", hosts);
    let started = Instant::now();
    for address in &addresses {
        let out = nix_copy(&key, address, &system).output().unwrap();
        assert!(
            out.status.success(),
            "nix copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "nix copy, host after host:                             {:>6.2} s, {:.1} MiB sent",
        started.elapsed().as_secs_f64(),
        mib(closure_bytes * hosts)
    );

    // 3. nix copy, all hosts at once.
    let addresses = bare_hosts(dir, &root, "par", hosts);
    let started = Instant::now();
    let children: Vec<_> = addresses
        .iter()
        .map(|a| nix_copy(&key, a, &system).spawn().unwrap())
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nix copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "nix copy, all {hosts} at once:                             {:>6.2} s, {:.1} MiB sent",
        started.elapsed().as_secs_f64(),
        mib(closure_bytes * hosts)
    );
    println!("(nix copy only copies; prov also activates and confirms each host)");

    prov(dir, &root, &["destroy", "--auto-approve"]);
    for name in ["seq", "par"] {
        let (spec, state) = (format!("{name}.toml"), format!(".prov-{name}"));
        prov(
            dir,
            &root,
            &[
                "-f",
                &spec,
                "--state-dir",
                &state,
                "destroy",
                "--auto-approve",
            ],
        );
    }
}
