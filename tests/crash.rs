//! Crash safety: SIGKILL `prov apply` at chosen points while it creates ten
//! instances; the next apply must converge with exactly ten instances, every
//! one recorded, none duplicated, none orphaned.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{ec2_spec, Moto, Workspace};

/// Starts `prov apply` paused at `point` (NAME:N) and SIGKILLs it there.
/// Returns false if the run finished before reaching the point.
fn kill_at(ws: &Workspace, point: &str) -> bool {
    let mut child = ws
        .command(&["apply", "--auto-approve", "--parallelism", "3"])
        .env("PROV_TEST_PAUSE_AT", point)
        .env("PROV_TEST_PAUSE_SECS", "30")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut paused = false;
    for line in BufReader::new(stderr).lines().take(10_000) {
        let line = line.unwrap();
        if line.contains("prov: paused at") {
            paused = true;
            break;
        }
    }
    sigkill(&mut child);
    paused
}

/// Starts `prov apply` and SIGKILLs it after `after`.
fn kill_after(ws: &Workspace, after: Duration) {
    let mut child = ws
        .command(&["apply", "--auto-approve", "--parallelism", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    sigkill(&mut child);
}

fn sigkill(child: &mut Child) {
    // Child::kill sends SIGKILL on Unix.
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_during_apply_never_duplicates_or_orphans() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write(
        "prov.toml",
        &ec2_spec("crash", 10, "t3.micro", "ami-12c6146b"),
    );

    // The worst window: the instance exists, its id is not saved yet.
    assert!(kill_at(&ws, "after-create:2"));
    // Intent saved, create call not yet made.
    assert!(kill_at(&ws, "before-create:2"));
    // Again the worst window, later in the run.
    assert!(kill_at(&ws, "after-create:4"));
    // And at arbitrary moments.
    for ms in [150, 400, 800] {
        kill_after(&ws, Duration::from_millis(ms));
    }

    let run = ws.ok(&["apply", "--auto-approve"]);
    let instances = moto.instances("crash");
    let addresses: Vec<&str> = instances.iter().map(|(_, a)| a.as_str()).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("web[{i}]")).collect();
    let mut sorted_expected = expected.clone();
    sorted_expected.sort();
    assert_eq!(
        addresses, sorted_expected,
        "exactly ten instances, one per address:\n{run}"
    );

    let state = ws.state();
    let resources = state["resources"].as_object().unwrap();
    let mut recorded: Vec<(String, String)> = resources
        .iter()
        .filter(|(_, r)| r["kind"] == "instance")
        .map(|(address, r)| (r["id"].as_str().unwrap().to_owned(), address.clone()))
        .collect();
    recorded.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        recorded, instances,
        "state lists exactly the real instances"
    );
    assert!(resources.values().all(|r| r["status"] == "ready"));

    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
}

/// state-hardening 5: a record of an interrupted create has a token but no
/// id, and `destroy --refresh=false` skipped the provider call for it,
/// leaving the instance running with nothing recording it. Such records are
/// looked up by token whatever --refresh says.
#[test]
fn destroy_without_refresh_still_finds_the_objects_of_interrupted_creates() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write(
        "prov.toml",
        &ec2_spec("orphan", 3, "t3.micro", "ami-12c6146b"),
    );
    // Killed when the third create call returned (after the key pair and
    // the security group: an instance that exists, its record with no id).
    assert!(kill_at(&ws, "after-create:3"));
    let state = ws.state();
    let pending = state["resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["status"] == "creating" && r.get("id").is_none_or(serde_json::Value::is_null))
        .count();
    assert!(pending >= 1, "no interrupted create in {state:#}");
    assert!(!moto.instances("orphan").is_empty());

    let run = ws.ok(&["destroy", "--auto-approve", "--refresh=false"]);
    assert!(
        moto.instances("orphan").is_empty(),
        "destroy --refresh=false left an instance running:\n{run}"
    );
    let listed = ws.ok(&["state", "list"]);
    assert!(!listed.stdout.contains("web["), "{listed}");
}
