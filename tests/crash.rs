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

/// SIGKILLs an apply at `point`: a pause point (`NAME:N`, which the run
/// must reach) or a delay (`300ms`).
fn kill(ws: &Workspace, point: &str) {
    match point.strip_suffix("ms") {
        Some(ms) => kill_after(ws, Duration::from_millis(ms.parse().unwrap())),
        None => assert!(kill_at(ws, point), "the apply never reached {point}"),
    }
}

/// The instances of `deployment` that are not terminated, as
/// `(address, state, instance type, image)`, sorted by address.
fn described(moto: &Moto, deployment: &str) -> Vec<(String, String, String, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let mut found: Vec<_> = moto
        .live_instances(deployment)
        .into_iter()
        .map(|(address, i)| {
            (
                address,
                text(&i["State"]["Name"]),
                text(&i["InstanceType"]),
                text(&i["ImageId"]),
            )
        })
        .collect();
    found.sort();
    found
}

/// state-hardening 4: SIGKILL at exact points of updates, replacements and
/// deletes (and at arbitrary moments); after the next apply exactly the
/// desired instances exist, all running, and the plan is empty.
#[test]
fn sigkill_during_update_replace_and_delete_converges() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    let (old_ami, new_ami) = ("ami-12c6146b", "ami-1e749f67");
    ws.write("prov.toml", &ec2_spec("crashchg", 3, "t3.micro", old_ami));
    ws.ok(&["apply", "--auto-approve"]);

    let converged = |count: usize, itype: &str, ami: &str, what: &str| {
        let run = ws.ok(&["apply", "--auto-approve"]);
        let expected: Vec<(String, String, String, String)> = (0..count)
            .map(|i| {
                (
                    format!("web[{i}]"),
                    "running".to_owned(),
                    itype.to_owned(),
                    ami.to_owned(),
                )
            })
            .collect();
        assert_eq!(described(&moto, "crashchg"), expected, "{what}:\n{run}");
        let plan = ws.prov(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "{what}: {plan}");
    };

    // Each round asks for another change, so every kill meets one.
    // Update in place (stop, modify, start): killed with the change made
    // but not saved, before it, and at arbitrary moments mid-call (an
    // instance left stopped is drift the next apply starts).
    let rounds = [
        ("t3.small", "after-update:1"),
        ("t3.medium", "before-update:2"),
        ("t3.2xlarge", "300ms"),
        ("t3.xlarge", "700ms"),
        // Changed and still stopped: nothing but the stop is left to undo.
        ("t3.large", "ec2-stopped:2"),
    ];
    for (itype, point) in rounds {
        ws.write("prov.toml", &ec2_spec("crashchg", 3, itype, old_ami));
        kill(&ws, point);
    }
    converged(3, "t3.large", old_ami, "update");

    // Replace (delete, then create): killed with the old one gone but not
    // saved, and with the new one made but not saved.
    for (ami, point) in [
        (new_ami, "after-delete:1"),
        (old_ami, "after-create:2"),
        (new_ami, "500ms"),
    ] {
        ws.write("prov.toml", &ec2_spec("crashchg", 3, "t3.large", ami));
        kill(&ws, point);
    }
    converged(3, "t3.large", new_ami, "replace");

    // Delete: killed with an instance terminated but still recorded, and
    // just before the call.
    for (count, point) in [(2, "after-delete:1"), (1, "before-delete:1")] {
        ws.write(
            "prov.toml",
            &ec2_spec("crashchg", count, "t3.large", new_ami),
        );
        kill(&ws, point);
    }
    converged(1, "t3.large", new_ami, "delete");
    ws.ok(&["destroy", "--auto-approve"]);
}

/// state-hardening 4, local hosts: SIGKILL at exact points of in-place
/// updates (a new deployer key), replacements (a new address) and deletes;
/// after the next apply exactly the desired hosts exist (one directory and
/// one live process each), all recorded and running, and the plan is empty.
#[test]
fn sigkill_during_local_update_replace_and_delete_converges() {
    let ws = Workspace::new();
    for key in ["k1", "k2", "k3"] {
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
            .arg(ws.path().join(key))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let spec = |hosts: &[(&str, &str)], key: &str| {
        let mut text =
            format!("deployment = \"crashlocal\"\n[deploy]\nidentity_file = \"{key}\"\n");
        for (name, address) in hosts {
            text.push_str(&format!(
                "[hosts.{name}]\ntarget = \"local\"\naddress = \"{address}\"\n"
            ));
        }
        text
    };
    let converged = |hosts: &[(&str, &str)], key: &str, what: &str| {
        let run = ws.ok(&["apply", "--auto-approve"]);
        let state = ws.state();
        let resources = state["resources"].as_object().unwrap();
        let mut recorded: Vec<&str> = resources.keys().map(String::as_str).collect();
        recorded.sort_unstable();
        let mut wanted: Vec<&str> = hosts.iter().map(|(n, _)| *n).collect();
        wanted.sort_unstable();
        assert_eq!(recorded, wanted, "{what}: recorded hosts\n{run}");
        let public = std::fs::read_to_string(ws.path().join(format!("{key}.pub"))).unwrap();
        for (name, address) in hosts {
            let r = &resources[*name];
            assert_eq!(r["status"], "ready", "{what}: {name}");
            assert_eq!(r["attributes"]["address"], *address, "{what}: {name}");
            let pid = r["attributes"]["pid"].as_u64().unwrap();
            assert!(
                std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "{what}: {name}'s process {pid} runs"
            );
            let keys = r["attributes"]["authorized_keys"].to_string();
            assert!(
                keys.contains(public.split_whitespace().nth(1).unwrap()),
                "{what}: {name} lets the deployer in: {keys}"
            );
        }
        let mut dirs: Vec<String> = std::fs::read_dir(ws.local_root().join("crashlocal"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        assert_eq!(dirs, wanted, "{what}: one directory per host, no leftovers");
        let plan = ws.prov(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "{what}: {plan}");
    };
    let two = [("a", "127.0.0.41"), ("b", "127.0.0.42")];
    ws.write("prov.toml", &spec(&two, "k1"));
    ws.ok(&["apply", "--auto-approve"]);

    // In place: another deployer key.
    ws.write("prov.toml", &spec(&two, "k2"));
    kill(&ws, "after-update:1");
    ws.write("prov.toml", &spec(&two, "k3"));
    kill(&ws, "before-update:2");
    converged(&two, "k3", "update");

    // Replace: another address.
    let moved = [("a", "127.0.0.51"), ("b", "127.0.0.52")];
    ws.write("prov.toml", &spec(&moved, "k3"));
    kill(&ws, "after-delete:1");
    kill(&ws, "after-create:1");
    converged(&moved, "k3", "replace");

    // Delete.
    let one = [("a", "127.0.0.51")];
    ws.write("prov.toml", &spec(&one, "k3"));
    kill(&ws, "after-delete:1");
    converged(&one, "k3", "delete");
    ws.ok(&["destroy", "--auto-approve"]);
}
