//! Planning benchmarks. Prints figures; asserts nothing.
//!
//! `cargo bench --bench plan` measures, with the built `prov` binary:
//! 1. `prov plan --refresh=false` over synthetic state of 1,000, 10,000 and 100,000
//!    instances: wall time and peak memory (max RSS);
//! 2. `prov plan` with refresh of 500 instances in a local moto server: wall
//!    time and the number of EC2 API calls prov made.
//!
//! Set `PROV_BENCH_SKIP_MOTO=1` to skip the second part,
//! `PROV_BENCH_COUNTS=10000,100000` to plan only those sizes, and
//! `PROV_BENCH_KEEP=1` to keep each size's directory (spec and state, to
//! profile `prov plan` in) and print where it is.

// A benchmark is a test program: a failed setup step should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

fn prov() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prov"));
    command
        .env("NO_COLOR", "1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::null());
    command
}

/// Hosts per group: the spec's `count` is at most 1,000.
const GROUP: usize = 1000;

/// A spec of `count` instances in groups `web0`, `web1`, … of up to 1,000.
fn spec(deployment: &str, count: usize) -> String {
    let mut spec =
        format!("deployment = \"{deployment}\"\n[providers.ec2]\nregion = \"us-east-1\"\n");
    for group in 0..count.div_ceil(GROUP) {
        let n = GROUP.min(count - group * GROUP);
        spec.push_str(&format!(
            "\n[hosts.web{group}]\ntarget = \"ec2\"\ncount = {n}\nami = \"ami-12c6146b\"\ninstance_type = \"t3.micro\"\ntags = {{ role = \"web\" }}\n"
        ));
    }
    spec
}

/// The address of instance `i` in [`spec`].
fn address(i: usize) -> String {
    format!("web{}[{}]", i / GROUP, i % GROUP)
}

/// State with `count` ready instances; every tenth one has drifted to another
/// instance type, so the plan has real work to show.
fn synthetic_state(deployment: &str, count: usize) -> serde_json::Value {
    let mut resources = BTreeMap::new();
    for i in 0..count {
        let address = address(i);
        let instance_type = if i % 10 == 0 { "t3.small" } else { "t3.micro" };
        resources.insert(
            address.clone(),
            json!({
                "provider": "ec2",
                "kind": "instance",
                "id": format!("i-{i:017x}"),
                "status": "ready",
                "generation": 1,
                "attributes": {
                    "ami": "ami-12c6146b",
                    "instance_type": instance_type,
                    "tags": {
                        "Name": format!("{deployment}-{address}"),
                        "prov:address": address,
                        "prov:deployment": deployment,
                        "role": "web"
                    },
                    "private_ip": format!("10.0.{}.{}", i / 250, i % 250),
                    "state": "running"
                }
            }),
        );
    }
    json!({
        "format_version": 1,
        "lineage": "00000000-0000-4000-8000-000000000000",
        "serial": 1,
        "deployment": deployment,
        "resources": resources,
        "outputs": {}
    })
}

/// Runs `command` under GNU time when present; returns (wall, max RSS KiB, stdout).
fn measure(mut command: Command) -> (Duration, Option<u64>, String) {
    let time = Path::new("/usr/bin/time");
    let started = Instant::now();
    let output = if time.exists() {
        let mut wrapped = Command::new(time);
        wrapped
            .arg("-f")
            .arg("PROV_BENCH_MAXRSS=%M")
            .arg(command.get_program());
        wrapped.args(command.get_args());
        for (k, v) in command.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped.stdin(Stdio::null()).output()
    } else {
        command.output()
    }
    .expect("run prov");
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("PROV_BENCH_MAXRSS="))
        .and_then(|v| v.trim().parse().ok());
    (
        wall,
        rss,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn plan_without_refresh(count: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let deployment = "bench";
    std::fs::write(dir.path().join("prov.toml"), spec(deployment, count)).expect("write spec");
    let state_file = dir.path().join("state.json");
    std::fs::write(&state_file, synthetic_state(deployment, count).to_string())
        .expect("write state");
    let pushed = prov()
        .current_dir(dir.path())
        .args(["state", "push", "state.json"])
        .output()
        .expect("push");
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let mut walls = Vec::new();
    let mut rsss = Vec::new();
    let mut summary = String::new();
    for _ in 0..3 {
        let mut command = prov();
        command
            .current_dir(dir.path())
            .args(["plan", "--refresh=false"])
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
        let (wall, rss, stdout) = measure(command);
        summary = stdout.lines().last().unwrap_or_default().to_owned();
        walls.push(wall);
        rsss.extend(rss);
    }
    walls.sort();
    rsss.sort_unstable();
    // The median: a machine shared with other work makes the best of 3 a
    // matter of luck.
    let wall = walls[walls.len() / 2];
    let rss = rsss.get(rsss.len() / 2).map_or_else(
        || "n/a".to_owned(),
        |kib| format!("{:.1} MiB", *kib as f64 / 1024.0),
    );
    println!(
        "plan --refresh=false, {count:>6} resources: {:>8.1} ms (median of 3; best {:.1} ms), peak RSS {rss}; {summary}",
        wall.as_secs_f64() * 1000.0,
        walls[0].as_secs_f64() * 1000.0
    );
    if std::env::var_os("PROV_BENCH_KEEP").is_some() {
        println!("  kept {}", dir.keep().display());
    }
}

fn refresh_against_moto(count: usize) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let Ok(mut moto) = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        println!("refresh benchmark skipped: cannot start {program} (run scripts/setup.sh)");
        return;
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("prov.toml"), spec("refresh", count)).expect("write spec");
    let started = Instant::now();
    let applied = prov()
        .current_dir(dir.path())
        .args(["apply", "--auto-approve", "--parallelism", "20"])
        .env("AWS_ENDPOINT_URL", &endpoint)
        .stdout(Stdio::null())
        .output()
        .expect("apply");
    let apply_time = started.elapsed();
    if !applied.status.success() {
        println!(
            "refresh benchmark: apply failed: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let _ = moto.kill();
        return;
    }
    println!(
        "apply of {count} instances into moto: {:.1} s (parallelism 20)",
        apply_time.as_secs_f64()
    );
    let mut best: Option<(Duration, String)> = None;
    for _ in 0..3 {
        let started = Instant::now();
        let output = prov()
            .current_dir(dir.path())
            .args(["plan", "--detailed-exitcode"])
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("PROV_LOG", "prov=info")
            .output()
            .expect("plan");
        let wall = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let calls = stderr
            .lines()
            .find(|l| l.contains("ec2 API calls"))
            .and_then(|l| l.split("calls=").nth(1))
            .map(|s| s.split_whitespace().next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| "?".into());
        if best.as_ref().is_none_or(|(b, _)| wall < *b) {
            best = Some((wall, calls));
        }
    }
    if let Some((wall, calls)) = best {
        println!(
            "plan with refresh of {count} instances (moto): {:.1} ms (best of 3), {calls} EC2 API calls",
            wall.as_secs_f64() * 1000.0
        );
    }
    let _ = moto.kill();
    let _ = moto.wait();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let counts: Vec<usize> = match std::env::var("PROV_BENCH_COUNTS") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().expect("PROV_BENCH_COUNTS: numbers"))
            .collect(),
        Err(_) => vec![1_000, 10_000, 100_000],
    };
    for count in counts {
        plan_without_refresh(count);
    }
    if std::env::var_os("PROV_BENCH_SKIP_MOTO").is_none() {
        refresh_against_moto(500);
    }
}
