//! Deploy benchmark. Prints figures; asserts nothing.
//!
//! `cargo bench --bench deploy` (as root, with nix-bin, openssh and moto:
//! see scripts/setup.sh) builds a stand-in system of 102 store paths and
//! about 100 MiB and deploys it to 8 fresh local hosts five ways, in three
//! interleaved rounds (every way once per round, so a slow moment of the
//! machine falls on all of them):
//! 1. `prov apply` over SSH (parallel over hosts, one export stream each):
//!    copy + activate + confirm;
//! 2. `prov apply` through the binary cache (`[cache]` in moto's S3, hosts
//!    substituting over plain HTTP): upload once + substitute + activate +
//!    confirm;
//! 3. `nix copy --to ssh://…` host after host (copy only);
//! 4. `nix copy --to ssh://…` to all hosts at once (copy only);
//! 5. the raw floor: `nix-store --export | ssh … nix-store --import` to all
//!    hosts at once (copy only).
//!
//! For each it prints the median wall time and the range, the bytes the
//! deployer sent, and the bytes each host received (its store's growth);
//! for prov also the copy phase (first `copying` line to the last `copied`
//! line, as the lines arrive), and the no-change re-apply against eight
//! parallel `ssh true`. Environment: `PROV_BENCH_HOSTS` (default 8),
//! `PROV_BENCH_SHARED_PATHS` (100), `PROV_BENCH_PATH_KIB` (1024),
//! `PROV_BENCH_ROUNDS` (3); `MOTO_SERVER` names moto (without it the cache
//! way is skipped).

// A benchmark is a test program: a failed setup step should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The bench's fixed surroundings.
struct Bench {
    dir: PathBuf,
    root: PathBuf,
    hosts: u64,
    system: String,
    closure_bytes: u64,
    moto: Option<String>,
}

/// What one deploy run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall: Duration,
    /// prov's copy phase, when known.
    copy: Option<Duration>,
    /// Bytes the deployer sent.
    sent: u64,
    /// Bytes each host's store grew by (mean).
    received: u64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Parses `3.4 MiB` (as prov prints sizes) into bytes.
fn parse_size(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    let value: f64 = words.next()?.trim_end_matches(',').parse().ok()?;
    let unit = words.next()?.trim_end_matches([',', ')']);
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * scale) as u64)
}

impl Bench {
    fn prov(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_prov"));
        command
            .args(args)
            .current_dir(&self.dir)
            .env("NO_COLOR", "1")
            .env("PROV_LOCAL_ROOT", &self.root)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .stdin(Stdio::null());
        if let Some(endpoint) = &self.moto {
            command.env("AWS_ENDPOINT_URL", endpoint);
        }
        command
    }

    /// `prov -f NAME.toml --state-dir .prov-NAME ARGS`: each deployment of
    /// the bench has its own spec and state.
    fn prov_on(&self, name: &str, args: &[&str]) -> Command {
        let (file, state) = (format!("{name}.toml"), format!(".prov-{name}"));
        let mut all = vec!["-f", &file, "--state-dir", &state];
        all.extend_from_slice(args);
        self.prov(&all)
    }

    /// [`Bench::prov_on`], which must succeed; its output.
    fn prov_on_ok(&self, name: &str, args: &[&str]) -> String {
        let output = self.prov_on(name, args).output().expect("run prov");
        assert!(
            output.status.success(),
            "prov {args:?} on {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The spec of deployment `name`: `hosts` local hosts, with the system
    /// when `system`, through the cache when `cache`.
    fn spec(&self, name: &str, system: bool, cache: bool) -> String {
        let mut spec = format!("deployment = \"{name}\"\n");
        if cache {
            let endpoint = self.moto.as_deref().unwrap_or_default();
            spec.push_str(&format!(
                "[cache]\nurl = \"s3://bench-cache/{name}\"\nsubstituter = \"{endpoint}/bench-cache/{name}\"\n"
            ));
        }
        spec.push_str(&format!(
            "[hosts.node]\ntarget = \"local\"\ncount = {}\n",
            self.hosts
        ));
        if system {
            spec.push_str("nix = { file = \"bench.nix\", attr = \"system\" }\n");
        }
        spec
    }

    /// Brings up the bare hosts of deployment `name`; their addresses.
    fn bare_hosts(&self, name: &str, cache: bool) -> Vec<String> {
        let file = format!("{name}.toml");
        std::fs::write(self.dir.join(&file), self.spec(name, false, cache)).unwrap();
        self.prov_on_ok(name, &["apply", "--auto-approve"]);
        (0..self.hosts)
            .map(|i| {
                std::fs::read_to_string(self.host_dir(name, i).join("address"))
                    .unwrap()
                    .trim()
                    .to_owned()
            })
            .collect()
    }

    fn host_dir(&self, name: &str, i: u64) -> PathBuf {
        self.root.join(name).join(format!("node-{i}"))
    }

    /// The bytes in the stores of `name`'s hosts.
    fn store_bytes(&self, name: &str) -> Vec<u64> {
        (0..self.hosts)
            .map(|i| {
                let out = Command::new("du")
                    .args(["-sb", "--apparent-size"])
                    .arg(self.host_dir(name, i).join("nix/store"))
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    fn destroy(&self, name: &str) {
        self.prov_on_ok(name, &["destroy", "--auto-approve"]);
    }

    fn key(&self) -> PathBuf {
        self.dir.join(".prov/ssh/id_ed25519")
    }

    fn ssh(&self, address: &str) -> Command {
        let mut command = Command::new("ssh");
        command.args([
            "-i",
            &self.key().to_string_lossy(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            &format!("root@{address}"),
        ]);
        command
    }

    /// prov apply of the system to fresh hosts (over SSH, or through the
    /// cache), lines timed as they arrive.
    fn prov_way(&self, name: &str, cache: bool) -> Sample {
        let _ = self.bare_hosts(name, cache);
        let before = self.store_bytes(name);
        let file = format!("{name}.toml");
        std::fs::write(self.dir.join(&file), self.spec(name, true, cache)).unwrap();
        let parallelism = self.hosts.to_string();
        let started = Instant::now();
        let mut child: Child = self
            .prov_on(
                name,
                &["apply", "--auto-approve", "--parallelism", &parallelism],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run prov");
        let stdout = child.stdout.take().unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.push((started.elapsed(), line));
        }
        let output = child.wait_with_output().unwrap();
        let wall = started.elapsed();
        assert!(
            output.status.success(),
            "prov apply failed:\n{}\n{}",
            lines
                .iter()
                .map(|(_, l)| l.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&output.stderr)
        );
        // Through the cache, hosts substitute before their copy phase: its
        // figure is the wall time.
        let first = lines
            .iter()
            .find(|(_, l)| l.contains(": copying ") && !cache)
            .map(|(t, _)| *t);
        let last = lines
            .iter()
            .filter(|(_, l)| l.contains(": copied "))
            .map(|(t, _)| *t)
            .max();
        // What went over SSH (`copied N paths, SIZE in`) and to the cache
        // (`uploaded N of M paths (SIZE)`).
        let mut sent = 0;
        for (_, line) in &lines {
            if let Some(rest) = line.split(": copied ").nth(1) {
                sent += rest.split(", ").nth(1).and_then(parse_size).unwrap_or(0);
            }
            if line.starts_with("cache ") {
                if let Some(size) = line.split('(').nth(1) {
                    sent += parse_size(size).unwrap_or(0);
                }
            }
        }
        let after = self.store_bytes(name);
        let received = after.iter().zip(&before).map(|(a, b)| a - b).sum::<u64>() / self.hosts;
        self.destroy(name);
        Sample {
            wall,
            copy: first.zip(last).map(|(f, l)| l.saturating_sub(f)),
            sent,
            received,
        }
    }

    /// A copy-only way over bare hosts: `run` gets the addresses.
    fn copy_way(&self, name: &str, run: impl FnOnce(&[String])) -> Sample {
        let addresses = self.bare_hosts(name, false);
        let before = self.store_bytes(name);
        let started = Instant::now();
        run(&addresses);
        let wall = started.elapsed();
        let after = self.store_bytes(name);
        let received = after.iter().zip(&before).map(|(a, b)| a - b).sum::<u64>() / self.hosts;
        self.destroy(name);
        Sample {
            wall,
            copy: None,
            sent: self.closure_bytes * self.hosts,
            received,
        }
    }

    fn nix_copy(&self, address: &str) -> Command {
        let mut command = Command::new("nix");
        command
            .args(["--extra-experimental-features", "nix-command", "copy", "--to"])
            .arg(format!("ssh://root@{address}"))
            .arg(&self.system)
            .env(
                "NIX_SSHOPTS",
                format!(
                    "-i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
                    self.key().display()
                ),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// `nix-store --export CLOSURE | ssh HOST nix-store --import`.
    fn raw_copy(&self, address: &str) -> Child {
        let script = format!(
            "nix-store --export $(nix-store -qR {}) | {} nix-store --import >/dev/null",
            self.system,
            shell_words(&self.ssh(address))
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// A command as a shell line (its arguments need no quoting here).
fn shell_words(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn wait_all(children: Vec<Child>, what: &str) {
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Median and range of `values` (seconds).
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

/// Starts moto on a free port; its endpoint and process.
fn start_moto() -> Option<(String, Child)> {
    let program = std::env::var("MOTO_SERVER").ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()?;
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((format!("http://127.0.0.1:{port}"), child))
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

fn build_system(dir: &Path, shared: u64, kib: u64) -> (String, u64, usize) {
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
    let bytes = String::from_utf8(sizes.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum();
    (system, bytes, paths.len())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let hosts = env_or("PROV_BENCH_HOSTS", 8);
    let rounds = env_or("PROV_BENCH_ROUNDS", 3);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().to_owned();
    let root = dir.join("hosts");
    let _hosts = Hosts(root.clone());
    let (system, closure_bytes, paths) = build_system(
        &dir,
        env_or("PROV_BENCH_SHARED_PATHS", 100),
        env_or("PROV_BENCH_PATH_KIB", 1024),
    );
    let moto = start_moto();
    let bench = Bench {
        dir,
        root,
        hosts,
        system,
        closure_bytes,
        moto: moto.as_ref().map(|(endpoint, _)| endpoint.clone()),
    };
    if let Some(endpoint) = &bench.moto {
        let out = Command::new("aws")
            .args([
                "--endpoint-url",
                endpoint,
                "s3api",
                "create-bucket",
                "--bucket",
                "bench-cache",
            ])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .expect("aws CLI (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "closure: {paths} paths, {:.1} MiB; {hosts} local hosts; {rounds} interleaved rounds; machine has {} cores",
        mib(closure_bytes),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // The deployer key exists before the first way (the copy-only ways use it).
    let _ = bench.bare_hosts("warmup", false);
    bench.destroy("warmup");

    let ways: [&str; 5] = [
        "prov over SSH (copy + activate + confirm)",
        "prov through the cache (upload once + substitute + activate + confirm)",
        "nix copy, host after host (copy only)",
        "nix copy, all at once (copy only)",
        "raw floor: nix-store --export | ssh nix-store --import, all at once",
    ];
    let mut samples: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for (way, _) in ways.iter().enumerate() {
            let name = format!("w{way}r{round}");
            let sample = match way {
                0 => bench.prov_way(&name, false),
                1 if bench.moto.is_some() => bench.prov_way(&name, true),
                1 => continue,
                2 => bench.copy_way(&name, |addresses| {
                    for address in addresses {
                        let out = bench.nix_copy(address).output().unwrap();
                        assert!(
                            out.status.success(),
                            "nix copy: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }),
                3 => bench.copy_way(&name, |addresses| {
                    let children = addresses
                        .iter()
                        .map(|a| bench.nix_copy(a).spawn().unwrap())
                        .collect();
                    wait_all(children, "nix copy");
                }),
                _ => bench.copy_way(&name, |addresses| {
                    let children = addresses.iter().map(|a| bench.raw_copy(a)).collect();
                    wait_all(children, "raw copy");
                }),
            };
            samples.entry(way).or_default().push(sample);
        }
    }
    println!();
    println!(
        "{:<72} {:>8} {:>15} {:>12} {:>14}",
        "way", "median", "min-max", "sent", "per host"
    );
    let median_of = |way: usize| {
        samples
            .get(&way)
            .map(|s| spread(&s.iter().map(|x| x.wall.as_secs_f64()).collect::<Vec<_>>()).0)
    };
    for (way, label) in ways.iter().enumerate() {
        let Some(list) = samples.get(&way) else {
            println!("{label:<72} skipped (no MOTO_SERVER)");
            continue;
        };
        let (median, min, max) = spread(
            &list
                .iter()
                .map(|s| s.wall.as_secs_f64())
                .collect::<Vec<_>>(),
        );
        let sent = list.iter().map(|s| s.sent).sum::<u64>() / list.len() as u64;
        let received = list.iter().map(|s| s.received).sum::<u64>() / list.len() as u64;
        println!(
            "{label:<72} {median:>7.2}s {:>15} {:>8.1} MiB {:>10.1} MiB",
            format!("{min:.2}-{max:.2}s"),
            mib(sent),
            mib(received)
        );
        let copies: Vec<f64> = list
            .iter()
            .filter_map(|s| s.copy)
            .map(|d| d.as_secs_f64())
            .collect();
        if !copies.is_empty() {
            let (median, min, max) = spread(&copies);
            println!("  its copy phase (first copying line to last copied line): {median:.2}s ({min:.2}-{max:.2}s)");
        }
    }
    if let (Some(prov), Some(parallel), Some(floor)) = (median_of(0), median_of(3), median_of(4)) {
        let copies: Vec<f64> = samples[&0]
            .iter()
            .filter_map(|s| s.copy)
            .map(|d| d.as_secs_f64())
            .collect();
        let copy = if copies.is_empty() {
            f64::NAN
        } else {
            spread(&copies).0
        };
        println!(
            "\nprov over SSH / nix copy all at once: {:.2}x; prov's copy phase / raw floor: {:.2}x",
            prov / parallel,
            copy / floor
        );
    }

    // No-change re-apply against eight parallel `ssh true`.
    let addresses = bench.bare_hosts("noop", false);
    std::fs::write(bench.dir.join("noop.toml"), bench.spec("noop", true, false)).unwrap();
    bench.prov_on_ok("noop", &["apply", "--auto-approve"]);
    let mut noop = Vec::new();
    let mut ssh = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let out = bench.prov_on_ok("noop", &["apply", "--auto-approve"]);
        noop.push(started.elapsed().as_secs_f64());
        assert!(out.contains("No changes."), "{out}");
        let started = Instant::now();
        let children = addresses
            .iter()
            .map(|a| {
                let mut c = bench.ssh(a);
                c.arg("true").stdout(Stdio::null()).stderr(Stdio::piped());
                c.spawn().unwrap()
            })
            .collect();
        wait_all(children, "ssh true");
        ssh.push(started.elapsed().as_secs_f64());
    }
    let (noop, _, _) = spread(&noop);
    let (ssh, _, _) = spread(&ssh);
    println!(
        "prov apply with nothing to do: {noop:.2}s; eight parallel `ssh true`: {ssh:.2}s ({:.2}x)",
        noop / ssh
    );
    bench.destroy("noop");
    if let Some((_, mut child)) = moto {
        let _ = child.kill();
        let _ = child.wait();
    }
}
