//! Deploying NixOS systems to local namespace hosts: the quickstart, no-op
//! re-applies, minimal copies, rollback under a real fault, health checks,
//! host key pinning, a connection dropped mid-copy.
//!
//! The systems are stand-ins built with Nix from examples/systems.nix (no
//! nixpkgs here); the copy and activation protocol around them is the real one.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{repo, Workspace};

/// A workspace with examples/systems.nix and a `systems.nix`-based spec.
pub(crate) fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.copy_example("systems.nix");
    ws
}

/// `nix = { file = "v.nix", attr = "NAME" }` systems: writes v.nix with one
/// system per (name, version, options).
pub(crate) fn write_systems(ws: &Workspace, systems: &[(&str, &str, &str)]) {
    let mut text = String::from("let s = import ./systems.nix; in {\n");
    for (attr, version, extra) in systems {
        text.push_str(&format!(
            "  {attr} = s.mkSystem {{ name = \"{attr}\"; version = \"{version}\"; {extra} }};\n"
        ));
    }
    text.push_str("}\n");
    ws.write("v.nix", &text);
}

pub(crate) fn host_spec(deployment: &str, hosts: &[&str], confirm: u32, extra: &str) -> String {
    let mut spec = format!("deployment = \"{deployment}\"\n{extra}\n");
    for host in hosts {
        spec.push_str(&format!(
            "[hosts.{host}]\ntarget = \"local\"\nnix = {{ file = \"v.nix\", attr = \"{host}\" }}\nconfirm_timeout = {confirm}\n\n"
        ));
    }
    spec
}

/// What the host's system profile points at (read from the host directory).
pub(crate) fn profile(dir: &Path) -> Option<String> {
    let profiles = dir.join("nix/var/nix/profiles");
    let link = std::fs::read_link(profiles.join("system")).ok()?;
    let target = std::fs::read_link(profiles.join(link)).ok()?;
    Some(target.to_string_lossy().into_owned())
}

/// The stand-in's record of activations: `GOAL SYSTEM` lines.
pub(crate) fn activations(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("nix/var/prov-standin/activations"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn store_paths(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("nix/store"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn built(ws: &Workspace, attr: &str) -> String {
    crate::harness::nix_build(ws.path(), "v.nix", attr)
}

#[test]
fn quickstart_deploys_three_local_hosts_and_reapply_does_nothing() {
    let ws = workspace();
    let quickstart = std::fs::read_to_string(repo().join("examples/quickstart.toml")).unwrap();
    ws.write("prov.toml", &quickstart);
    let run = ws.ok(&["apply", "--auto-approve"]);
    assert!(run.stdout.contains("3 created"), "{run}");
    assert!(run.stdout.contains("3 hosts deployed"), "{run}");
    let system = crate::harness::nix_build(&repo().join("examples"), "systems.nix", "web");
    for i in 0..3 {
        let dir = ws.host_dir("quickstart", &format!("web-{i}"));
        assert_eq!(profile(&dir).as_deref(), Some(system.as_str()), "web[{i}]");
        assert_eq!(activations(&dir), [format!("switch {system}")], "web[{i}]");
    }
    let state = ws.state();
    assert_eq!(state["hosts"]["web[1]"]["system"], system.as_str());
    assert_eq!(state["hosts"]["web[1]"]["generation"], 1);
    assert!(state["hosts"]["web[1]"]["host_key"]
        .as_str()
        .unwrap()
        .starts_with("ssh-ed25519 "));

    // Nothing to do: no copy, no activation.
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
    assert!(plan.stdout.contains("No changes."), "{plan}");
    let again = ws.ok(&["apply", "--auto-approve"]);
    assert!(again.stdout.contains("No changes."), "{again}");
    assert!(!again.stdout.contains("copying"), "{again}");
    for i in 0..3 {
        assert_eq!(
            activations(&ws.host_dir("quickstart", &format!("web-{i}"))).len(),
            1
        );
    }

    // Destroyed and created again: new machines, new host keys, deployed again.
    let destroyed = ws.ok(&["destroy", "--auto-approve"]);
    assert!(destroyed.stdout.contains("3 destroyed"), "{destroyed}");
    assert_eq!(
        ws.state()["hosts"],
        serde_json::Value::Null,
        "deploy records go with their hosts"
    );
    let recreated = ws.ok(&["apply", "--auto-approve"]);
    assert!(recreated.stdout.contains("3 hosts deployed"), "{recreated}");
}

#[test]
fn nix_spec_plans_like_the_toml_spec() {
    let ws = workspace();
    ws.copy_example("quickstart.toml")
        .copy_example("quickstart.nix");
    let toml = ws.ok(&[
        "-f",
        "quickstart.toml",
        "--state-dir",
        "s1",
        "plan",
        "--json",
    ]);
    let nix = ws.ok(&[
        "-f",
        "quickstart.nix",
        "--state-dir",
        "s2",
        "plan",
        "--json",
    ]);
    let strip = |text: &str| {
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        v.as_object_mut().unwrap().remove("spec_hash");
        v
    };
    assert_eq!(strip(&toml.stdout), strip(&nix.stdout));
}

#[test]
fn nix_errors_reach_the_user_with_file_and_line() {
    let ws = workspace();
    ws.write(
        "broken.nix",
        "{\n  deployment = \"x\";\n  hosts = undefinedThing;\n}\n",
    );
    let run = ws.prov(&["-f", "broken.nix", "validate"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("undefined variable 'undefinedThing'"),
        "{run}"
    );
    assert!(run.stderr.contains("broken.nix:3:"), "{run}");
}

#[test]
fn changing_one_system_copies_only_new_paths_and_activates_only_that_host() {
    let ws = workspace();
    write_systems(&ws, &[("alpha", "1", ""), ("beta", "1", "")]);
    ws.write(
        "prov.toml",
        &host_spec("onechange", &["alpha", "beta"], 30, ""),
    );
    ws.ok(&["apply", "--auto-approve"]);
    let alpha = ws.host_dir("onechange", "alpha");
    let beta = ws.host_dir("onechange", "beta");
    let before = store_paths(&alpha);
    let beta_before = store_paths(&beta);

    write_systems(&ws, &[("alpha", "2", ""), ("beta", "1", "")]);
    let text = ws.ok(&["plan"]).stdout;
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"/nix/store/[0-9a-z]{32}-", "/nix/store/[hash]-");
    settings.bind(|| insta::assert_snapshot!("one_system_changes_text", text));
    let json = ws.ok(&["plan", "--json"]).stdout;
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    let deploys = plan["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 1, "{json}");
    assert_eq!(deploys[0]["address"], "alpha");
    assert_eq!(deploys[0]["exact"], true);
    // A new toplevel and a new payload; the shared base paths stay.
    assert_eq!(deploys[0]["paths"], 2, "{json}");

    let mut apply = ws.command(&["apply", "--auto-approve"]);
    apply.env("PROV_LOG", "prov::ssh=debug");
    let run = crate::harness::run_from(apply.output().unwrap(), &["apply"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("alpha: copied 2 paths"), "{run}");
    assert!(!run.stdout.contains("beta:"), "{run}");
    // Apply copies what its plan found missing, without asking again, and
    // over the very `nix-store --serve` session the plan asked (as `nix
    // copy` asks and sends in one).
    let count = |pattern: &dyn Fn(&str) -> bool| run.stderr.lines().filter(|l| pattern(l)).count();
    let surveys = count(&|l| l.contains("ssh session") && l.contains("nix-store --serve"));
    assert_eq!(surveys, 2, "each host asked once, by the plan:\n{run}");
    let asked_again = count(&|l| l.contains("ssh exec done") && l.contains("--check-validity"));
    assert_eq!(asked_again, 0, "{run}");
    let new_sessions = count(&|l| l.contains("ssh exec ") && l.contains("nix-store --serve"));
    assert_eq!(new_sessions, 0, "the copy used the plan's session:\n{run}");
    let arrived: BTreeSet<String> = store_paths(&alpha).difference(&before).cloned().collect();
    assert_eq!(arrived.len(), 2, "{arrived:?}");
    assert!(arrived.iter().all(|p| p.ends_with("-2")), "{arrived:?}");
    let bytes: u64 = arrived
        .iter()
        .map(|p| dir_size(&alpha.join("nix/store").join(p)))
        .sum();
    assert!(
        bytes >= 64 * 1024,
        "the 64 KiB payload arrived ({bytes} bytes)"
    );
    assert_eq!(store_paths(&beta), beta_before, "nothing travelled to beta");
    assert_eq!(activations(&alpha).len(), 2);
    assert_eq!(activations(&beta).len(), 1);
    assert_eq!(profile(&alpha).unwrap(), built(&ws, "alpha"));
}

fn dir_size(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .flatten()
            .map(|e| dir_size(&e.path()))
            .sum()
    } else {
        meta.len()
    }
}

#[test]
fn rollback_under_a_real_fault_ten_times() {
    let ws = workspace();
    write_systems(&ws, &[("edge", "good", "")]);
    ws.write("prov.toml", &host_spec("faults", &["edge"], 3, ""));
    ws.ok(&["apply", "--auto-approve"]);
    let dir = ws.host_dir("faults", "edge");
    let good = built(&ws, "edge");
    assert_eq!(profile(&dir).as_deref(), Some(good.as_str()));

    for round in 1..=10 {
        // A system whose activation breaks SSH logins for new connections.
        write_systems(
            &ws,
            &[("edge", &format!("bad-{round}"), "breakSsh = true;")],
        );
        let bad = built(&ws, "edge");
        let started = Instant::now();
        let run = ws.prov(&["apply", "--auto-approve"]);
        let took = started.elapsed();
        assert_eq!(run.code, 1, "round {round}: {run}");
        assert!(
            run.stderr.contains("edge ROLLED BACK"),
            "round {round}: {run}"
        );
        assert!(
            run.stderr.contains("could not confirm"),
            "round {round}: {run}"
        );
        // A figure, not an assertion: the host's own clock bounds the window
        // (see rollback::a_slow_hosts_confirmation_window_is_counted_in_seconds_not_steps).
        eprintln!("round {round}: apply with rollback took {took:.1?}");
        assert_eq!(
            profile(&dir).as_deref(),
            Some(good.as_str()),
            "round {round}: back on the good system"
        );
        let log = activations(&dir);
        assert_eq!(log[log.len() - 2], format!("switch {bad}"), "round {round}");
        assert_eq!(
            log[log.len() - 1],
            format!("switch {good}"),
            "round {round}: the good system re-activated"
        );
        // State still records the good system.
        assert_eq!(ws.state()["hosts"]["edge"]["system"], good.as_str());
    }
    // And the good system deploys cleanly afterwards.
    write_systems(&ws, &[("edge", "good", "")]);
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
}

#[test]
fn failing_health_check_stops_the_rest_and_reverts_the_host() {
    let ws = workspace();
    write_systems(&ws, &[("a", "1", ""), ("b", "1", ""), ("c", "1", "")]);
    let deploy = "[deploy]\non_failure = \"stop\"\n";
    ws.write(
        "prov.toml",
        &host_spec("health", &["a", "b", "c"], 30, deploy),
    );
    ws.ok(&["apply", "--auto-approve"]);
    let v1: Vec<Option<String>> = ["a", "b", "c"]
        .iter()
        .map(|h| profile(&ws.host_dir("health", h)))
        .collect();

    write_systems(&ws, &[("a", "2", ""), ("b", "2", ""), ("c", "2", "")]);
    let spec = host_spec("health", &["a", "b", "c"], 30, deploy)
        + "[hosts.a.health]\ncommand = \"test -e /nonexistent\"\nretries = 2\ninterval = 1\n";
    ws.write("prov.toml", &spec);
    let run = ws.prov(&["apply", "--auto-approve", "--parallelism", "1"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("a ROLLED BACK"), "{run}");
    assert!(run.stderr.contains("health check failed"), "{run}");
    assert!(
        run.stderr
            .contains("not started (on_failure = \"stop\"): b, c"),
        "{run}"
    );
    let now: Vec<Option<String>> = ["a", "b", "c"]
        .iter()
        .map(|h| profile(&ws.host_dir("health", h)))
        .collect();
    assert_eq!(now, v1, "a reverted, b and c untouched");
    assert_eq!(activations(&ws.host_dir("health", "b")).len(), 1);
}

#[test]
fn a_host_presenting_another_key_is_refused_before_anything_is_sent() {
    let ws = workspace();
    write_systems(&ws, &[("pinned", "1", "")]);
    ws.write("prov.toml", &host_spec("keys", &["pinned"], 30, ""));
    ws.ok(&["apply", "--auto-approve"]);
    let dir = ws.host_dir("keys", "pinned");

    // Swap the host's key and make sshd reload it.
    swap_host_key(&dir);

    let store_before = store_paths(&dir);
    write_systems(&ws, &[("pinned", "2", "")]);
    let run = ws.prov(&["apply", "--auto-approve"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("host key"), "{run}");
    assert_eq!(store_paths(&dir), store_before, "nothing was copied");
    assert_eq!(activations(&dir).len(), 1, "nothing was activated");
}

/// Processes inside the local host at `dir` whose command line contains
/// `needle` (matched by PID namespace, so other tests' hosts are never hit).
pub(crate) fn host_processes(dir: &Path, needle: &str) -> Vec<u32> {
    let Ok(init) = std::fs::read_to_string(dir.join("init.pid")) else {
        return Vec::new();
    };
    let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/pid", init.trim())) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let same_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() == Some(ns.clone());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if same_ns && cmdline.contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_connection_dropped_mid_copy_fails_clearly_and_the_rerun_completes() {
    let ws = workspace();
    write_systems(&ws, &[("big", "1", "payloadKiB = 1;")]);
    ws.write("prov.toml", &host_spec("dropped", &["big"], 30, ""));
    ws.ok(&["apply", "--auto-approve"]);
    let dir = ws.host_dir("dropped", "big");

    // A large new payload, then kill the host's store process (`nix-store
    // --serve --write`, which takes the stream) mid-stream.
    write_systems(
        &ws,
        &[("big", "2", "payloadKiB = 200000; sharedPaths = 6;")],
    );
    built(&ws, "big");
    let child = ws
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the new payload is arriving (the plan's survey runs the same
    // process before the copy).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed = false;
    let arriving = || {
        std::fs::read_dir(dir.join("nix/store"))
            .map(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.contains("payload") && name.ends_with("-2")
                })
            })
            .unwrap_or(false)
    };
    while Instant::now() < deadline && !killed {
        if !arriving() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        for pid in host_processes(&dir, "nix-store --serve") {
            killed |= std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap()
                .success();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(killed, "saw the import running");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("copying the closure to big"), "{stderr}");

    let rerun = ws.ok(&["apply", "--auto-approve"]);
    assert!(rerun.stdout.contains("big: deployed"), "{rerun}");
    assert_eq!(profile(&dir).unwrap(), built(&ws, "big"));

    // The host's store is intact.
    let address = ws.state()["resources"]["big"]["attributes"]["ssh_host"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = ssh(
        &ws,
        &address,
        "nix-store --verify --check-contents 2>&1; echo status=$?",
    );
    assert!(text.contains("status=0"), "{text}");
    assert!(
        !text.contains("modified") && !text.contains("corrupt"),
        "{text}"
    );
}

#[test]
fn an_ec2_host_reached_through_an_ssh_override_is_deployed_end_to_end() {
    let moto = crate::harness::Moto::start();
    // A local host stands in for the instance's SSH endpoint (moto runs no VMs).
    let landing = workspace();
    landing.write(
        "prov.toml",
        "deployment = \"landing\"\n[hosts.box]\ntarget = \"local\"\n",
    );
    landing.ok(&["apply", "--auto-approve"]);
    let state = landing.state();
    let attributes = &state["resources"]["box"]["attributes"];
    let address = attributes["ssh_host"].as_str().unwrap().to_owned();
    let host_key = attributes["host_key"].as_str().unwrap().to_owned();
    let identity = landing.path().join(".prov/ssh/id_ed25519");

    let ws = Workspace::with_moto(&moto);
    ws.copy_example("systems.nix");
    write_systems(&ws, &[("app", "1", "")]);
    ws.write(
        "prov.toml",
        &format!(
            r#"deployment = "cloud"

[providers.ec2]
region = "us-east-1"

[deploy]
identity_file = "{identity}"

[hosts.app]
target = "ec2"
ami = "ami-12c6146b"
instance_type = "t3.micro"
nix = {{ file = "v.nix", attr = "app" }}
host_key = "{host_key}"

[hosts.app.ssh]
address = "{address}"
"#,
            identity = identity.display()
        ),
    );
    let run = ws.ok(&["apply", "--auto-approve"]);
    assert!(run.stdout.contains("app: created (i-"), "{run}");
    assert!(run.stdout.contains("app: deployed"), "{run}");
    let instances = moto.instances("cloud");
    assert_eq!(instances.len(), 1);
    let dir = landing.host_dir("landing", "box");
    let system = built(&ws, "app");
    assert_eq!(profile(&dir).as_deref(), Some(system.as_str()));
    assert_eq!(activations(&dir), [format!("switch {system}")]);
    let state = ws.state();
    assert_eq!(state["hosts"]["app"]["system"], system.as_str());
    assert_eq!(state["hosts"]["app"]["host_key"], host_key.as_str());
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
}

/// Runs `command` on a local host over SSH with the workspace's deployer key.
pub(crate) fn ssh(ws: &Workspace, address: &str, command: &str) -> String {
    let key = ws.path().join(".prov/ssh/id_ed25519");
    let out = std::process::Command::new("ssh")
        .args([
            "-i",
            key.to_str().unwrap(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("root@{address}"))
        .arg(command)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn profile_switched_outside_prov_is_drift_and_prov_rollback_goes_back() {
    let ws = workspace();
    write_systems(&ws, &[("solo", "1", "")]);
    ws.write("prov.toml", &host_spec("drifting", &["solo"], 30, ""));
    ws.ok(&["apply", "--auto-approve"]);
    let v1 = built(&ws, "solo");
    write_systems(&ws, &[("solo", "2", "")]);
    ws.ok(&["apply", "--auto-approve"]);
    let v2 = built(&ws, "solo");
    let dir = ws.host_dir("drifting", "solo");
    assert_eq!(profile(&dir).as_deref(), Some(v2.as_str()));
    assert_eq!(ws.state()["hosts"]["solo"]["generation"], 2);

    // Someone switches the host back by hand.
    let address = ws.state()["resources"]["solo"]["attributes"]["ssh_host"]
        .as_str()
        .unwrap()
        .to_owned();
    ssh(
        &ws,
        &address,
        &format!("nix-env -p /nix/var/nix/profiles/system --set {v1}"),
    );
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(
        plan.stdout.contains("solo was changed outside prov"),
        "{plan}"
    );
    assert!(
        plan.stdout
            .contains(&format!("~ system = \"{v2}\" -> \"{v1}\"")),
        "{plan}"
    );
    assert!(
        plan.stdout.contains("changed on the host outside prov"),
        "{plan}"
    );
    ws.ok(&["apply", "--auto-approve"]);
    assert_eq!(profile(&dir).as_deref(), Some(v2.as_str()));

    // prov rollback: back to the previous generation, activated and recorded.
    let run = ws.ok(&["rollback", "solo"]);
    assert!(run.stdout.contains(&v1), "{run}");
    assert_eq!(profile(&dir).as_deref(), Some(v1.as_str()));
    assert_eq!(activations(&dir).last().unwrap(), &format!("switch {v1}"));
    assert_eq!(ws.state()["hosts"]["solo"]["system"], v1.as_str());
}

#[test]
fn goal_test_activates_without_touching_the_profile() {
    let ws = workspace();
    write_systems(&ws, &[("trial", "1", "")]);
    let spec = host_spec("goals", &["trial"], 30, "").replace(
        "confirm_timeout = 30",
        "confirm_timeout = 30\ngoal = \"test\"",
    );
    ws.write("prov.toml", &spec);
    ws.ok(&["apply", "--auto-approve"]);
    let dir = ws.host_dir("goals", "trial");
    let system = built(&ws, "trial");
    assert_eq!(profile(&dir), None, "goal test sets no profile generation");
    assert_eq!(activations(&dir), [format!("test {system}")]);
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
}

#[test]
fn build_on_target_copies_derivations_and_builds_on_the_host() {
    let ws = workspace();
    write_systems(&ws, &[("builder", "remote-1", "")]);
    let spec = host_spec("remote", &["builder"], 30, "").replace(
        "confirm_timeout = 30",
        "confirm_timeout = 30\nbuild_on = \"target\"",
    );
    ws.write("prov.toml", &spec);
    let json = ws.ok(&["plan", "--json"]).stdout;
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        plan["deploys"][0]["derivation"]
            .as_str()
            .unwrap()
            .ends_with(".drv"),
        "{json}"
    );
    let run = ws.ok(&["apply", "--auto-approve"]);
    assert!(run.stdout.contains("building on the host"), "{run}");
    let dir = ws.host_dir("remote", "builder");
    let expected = plan["deploys"][0]["desired"].as_str().unwrap().to_owned();
    assert_eq!(profile(&dir).as_deref(), Some(expected.as_str()));
    let drvs = store_paths(&dir)
        .iter()
        .filter(|p| p.ends_with(".drv"))
        .count();
    assert!(drvs >= 2, "the derivations travelled ({drvs})");
}

#[test]
fn a_host_left_by_another_state_names_the_commands_that_remove_it() {
    // fresh-machine 4: the error used to end in "delete it first".
    let ws = workspace();
    write_systems(&ws, &[("twin", "1", "")]);
    ws.write("prov.toml", &host_spec("shared", &["twin"], 30, ""));
    // Another checkout of the same deployment: its own state directory.
    ws.ok(&["--state-dir", "other-state", "apply", "--auto-approve"]);

    let run = ws.prov(&["apply", "--auto-approve"]);
    assert_eq!(run.code, 1, "{run}");
    let remove = "prov -f prov.toml import twin local-shared-twin && \
                  prov -f prov.toml destroy --on twin --auto-approve";
    assert!(run.stderr.contains(remove), "{run}");
    assert!(
        run.stderr
            .contains("to keep it and manage it from this state instead:\n    prov -f prov.toml import twin local-shared-twin"),
        "{run}"
    );
    assert!(!run.stderr.contains("delete it first"), "{run}");

    // The commands do what the message says.
    ws.ok(&["import", "twin", "local-shared-twin"]);
    ws.ok(&["destroy", "--on", "twin", "--auto-approve"]);
    assert!(!ws.host_dir("shared", "twin").exists());
    ws.ok(&["apply", "--auto-approve"]);
    assert_eq!(
        profile(&ws.host_dir("shared", "twin")).as_deref(),
        Some(built(&ws, "twin").as_str())
    );
}

/// Gives the local host at `dir` a new SSH host key and makes its sshd
/// reload it.
pub(crate) fn swap_host_key(dir: &Path) {
    let key = dir.join("ssh_host_ed25519_key");
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(dir.join("ssh_host_ed25519_key.pub")).unwrap();
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let init = std::fs::read_to_string(dir.join("init.pid")).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", init.trim()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn a_jump_hosts_key_is_recorded_on_first_contact_and_checked_after() {
    // deploy-correctness 8: a jump host's key was accepted on every run and
    // never recorded, so a run without --accept-new-host-keys failed and
    // one with it trusted any jump host.
    let ws = workspace();
    let spec = |inner: &str| {
        write_systems(&ws, &[("bastion", "1", ""), ("inner", inner, "")]);
        ws.write(
            "prov.toml",
            "deployment = \"jumps\"\n\
             [hosts.bastion]\ntarget = \"local\"\naddress = \"127.0.0.241\"\n\
             nix = { file = \"v.nix\", attr = \"bastion\" }\n\
             [hosts.inner]\ntarget = \"local\"\nnix = { file = \"v.nix\", attr = \"inner\" }\n\
             depends_on = [\"bastion\"]\n\
             [hosts.inner.ssh.jump]\naddress = \"127.0.0.241\"\n",
        );
    };
    spec("1");
    let refused = ws.prov(&["apply", "--auto-approve"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains("jump host 127.0.0.241"),
        "{refused}"
    );
    ws.ok(&["--accept-new-host-keys", "apply", "--auto-approve"]);
    let bastion_key = std::fs::read_to_string(
        ws.host_dir("jumps", "bastion")
            .join("ssh_host_ed25519_key.pub"),
    )
    .unwrap();
    let recorded = ws.state()["hosts"]["inner"]["jump_host_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        bastion_key.starts_with(&recorded),
        "{recorded} vs {bastion_key}"
    );

    // Without the flag, the recorded key is enough.
    spec("2");
    ws.ok(&["apply", "--auto-approve"]);
    let inner = ws.host_dir("jumps", "inner");
    assert_eq!(profile(&inner).unwrap(), built(&ws, "inner"));

    // A jump host presenting another key is refused, even with the flag.
    swap_host_key(&ws.host_dir("jumps", "bastion"));
    spec("3");
    let before = activations(&inner).len();
    let run = ws.prov(&[
        "--accept-new-host-keys",
        "apply",
        "--auto-approve",
        "--on",
        "inner",
    ]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("host key"), "{run}");
    assert_eq!(activations(&inner).len(), before, "nothing was activated");
}

/// state-hardening 11: `state rm` forgot the resource but kept its host
/// record (pinned key, system, secrets), which a later machine at the same
/// address would inherit.
#[test]
fn state_rm_forgets_the_host_record_too() {
    let ws = workspace();
    write_systems(&ws, &[("box", "1", "")]);
    ws.write("prov.toml", &host_spec("rmhost", &["box"], 30, ""));
    ws.ok(&["apply", "--auto-approve"]);
    assert!(ws.state()["hosts"].get("box").is_some());
    ws.ok(&["state", "rm", "box"]);
    let state = ws.state();
    assert!(state["resources"].get("box").is_none(), "{state:#}");
    assert!(
        state["hosts"].get("box").is_none(),
        "the host record stays after state rm: {state:#}"
    );
}

/// state-hardening 11: `--on` that matched nothing printed "No changes" and
/// exited 0; a typo must be an error naming the selector.
#[test]
fn an_on_selector_that_matches_nothing_is_an_error() {
    let ws = workspace();
    write_systems(&ws, &[("web", "1", "")]);
    ws.write("prov.toml", &host_spec("onmiss", &["web"], 30, ""));
    for command in ["plan", "apply"] {
        let mut args = vec![command, "--on", "web", "--on", "wbe"];
        if command == "apply" {
            args.push("--auto-approve");
        }
        let run = ws.prov(&args);
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stderr.contains("`--on wbe` matches nothing"), "{run}");
        assert!(!run.stdout.contains("No changes"), "{run}");
    }
    let run = ws.prov(&["plan", "--on", "@role=none"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("@role=none"), "{run}");
    // A selector that matches works as before.
    let run = ws.prov(&["plan", "--on", "web"]);
    assert_eq!(run.code, 0, "{run}");
}

/// state-hardening 11: the evaluated form of a Nix spec with a schema error
/// was written with default permissions (0644 under the usual umask), though
/// it may hold everything the spec holds.
#[test]
fn the_evaluated_form_of_a_failing_nix_spec_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let ws = workspace();
    ws.write(
        "bad.nix",
        "{\n  deployment = \"x\";\n  hosts.h = { target = \"local\"; no_such_field = 1; };\n}\n",
    );
    let run = ws.prov(&["-f", "bad.nix", "validate"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("bad.nix.evaluated.toml"), "{run}");
    let meta = std::fs::metadata(ws.path().join("bad.nix.evaluated.toml")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{run}");
}

#[test]
fn hosts_lacking_the_same_paths_share_one_export() {
    let ws = workspace();
    write_systems(&ws, &[("node", "1", "sharedPaths = 8; sharedKiB = 512;")]);
    ws.write(
        "prov.toml",
        "deployment = \"shared\"\n[hosts.node]\ntarget = \"local\"\ncount = 3\n\
         nix = { file = \"v.nix\", attr = \"node\" }\n",
    );
    let mut apply = ws.command(&["apply", "--auto-approve"]);
    apply.env("PROV_LOG", "prov::deploy=info");
    let run = crate::harness::run_from(apply.output().unwrap(), &["apply"]);
    assert_eq!(run.code, 0, "{run}");
    let exports = run.stderr.matches("exporting once for every host").count();
    assert_eq!(exports, 1, "three hosts, one export:\n{run}");
    assert_eq!(run.stdout.matches("copied 10 paths").count(), 3, "{run}");
    let system = built(&ws, "node");
    for i in 0..3 {
        let dir = ws.host_dir("shared", &format!("node-{i}"));
        assert_eq!(profile(&dir).as_deref(), Some(system.as_str()));
    }
    let verify = ws.ok(&[
        "exec",
        "--",
        "nix-store --verify --check-contents 2>&1; echo verified",
    ]);
    assert_eq!(verify.stdout.matches("verified").count(), 3, "{verify}");
    assert!(
        !verify.stdout.contains("corrupt") && !verify.stdout.contains("modified"),
        "{verify}"
    );
}
