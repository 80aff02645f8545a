//! The rollback suite: activations that fail in every way a host can fail,
//! ten rounds each, and in every round prov's verdict is the host's own
//! recorded result (`/nix/var/prov/activations/*/result` on the host).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::deploy::{
    activations, built, host_processes, host_spec, profile, workspace, write_systems,
};
use crate::harness::Workspace;

const ROUNDS: u32 = 10;

/// The host's result of its latest activation (`confirmed`, `rolled-back`, …).
fn host_result(dir: &Path) -> String {
    let activations = dir.join("nix/var/prov/activations");
    let mut runs: Vec<_> = std::fs::read_dir(&activations)
        .unwrap_or_else(|e| panic!("{}: {e}", activations.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    runs.sort();
    let last = runs.last().expect("an activation directory");
    std::fs::read_to_string(last.join("result"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// prov's verdict from its exit code and output, in the host's words.
fn verdict(run: &crate::harness::Run, host: &str) -> &'static str {
    if run.code == 0 {
        "confirmed"
    } else if run.stderr.contains(&format!("{host} ROLLED BACK")) {
        "rolled-back"
    } else {
        "failed"
    }
}

#[test]
fn a_first_deploy_that_fails_its_health_check_leaves_no_generation_behind() {
    // deploy-correctness 1: with no previous generation, the rollback used to
    // re-activate the broken system and leave the profile pointing at it.
    let ws = workspace();
    write_systems(&ws, &[("h", "1", "")]);
    let spec = host_spec("first", &["h"], 30, "")
        + "[hosts.h.health]\ncommand = \"false\"\nretries = 1\ninterval = 1\n";
    ws.write("prov.toml", &spec);
    let system = built(&ws, "h");
    let dir = ws.host_dir("first", "h");
    for round in 1..=ROUNDS {
        let run = ws.prov(&["apply", "--auto-approve"]);
        assert_eq!(run.code, 1, "round {round}: {run}");
        assert!(
            run.stderr.contains("no previous system to return to"),
            "round {round}: {run}"
        );
        assert_eq!(verdict(&run, "h"), "rolled-back", "round {round}: {run}");
        assert_eq!(host_result(&dir), "rolled-back", "round {round}");
        assert_eq!(profile(&dir), None, "round {round}: no generation left");
        assert!(
            !dir.join("nix/var/nix/profiles/system").exists(),
            "round {round}: no system profile"
        );
        let log = activations(&dir);
        assert_eq!(
            log.len(),
            round as usize,
            "round {round}: activated once per round, never re-activated: {log:?}"
        );
        assert_eq!(log.last().unwrap(), &format!("switch {system}"));
        assert!(
            ws.state()["hosts"]["h"]["system"].is_null(),
            "round {round}: state records no deployed system"
        );
        let plan = ws.prov(&["plan", "--detailed-exitcode", "--on", "h"]);
        assert_eq!(
            plan.code, 2,
            "round {round}: the deploy is planned again\n{plan}"
        );
    }
}

#[test]
fn an_activation_whose_polling_connection_drops_is_confirmed_after_it_ends() {
    // deploy-correctness 2: a failed poll made prov count the window from the
    // start of activation and report a rollback the host never did.
    let ws = workspace();
    write_systems(&ws, &[("d", "0", "")]);
    ws.write("prov.toml", &host_spec("drops", &["d"], 3, ""));
    ws.ok(&["apply", "--auto-approve"]);
    let dir = ws.host_dir("drops", "d");
    for round in 1..=ROUNDS {
        write_systems(&ws, &[("d", &format!("{round}"), "activationSeconds = 4;")]);
        let system = built(&ws, "d");
        let child = ws
            .command(&["apply", "--auto-approve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // While switch-to-configuration runs, end every SSH session into the
        // host (as a restarted sshd or network would).
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut cut = false;
        while Instant::now() < deadline && !cut {
            if !host_processes(&dir, "switch-to-configuration").is_empty() {
                for pid in host_processes(&dir, "sshd: root") {
                    cut |= std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status()
                        .unwrap()
                        .success();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(cut, "round {round}: saw the activation running");
        let run = crate::harness::run_from(child.wait_with_output().unwrap(), &["apply"]);
        let host = host_result(&dir);
        assert_eq!(
            verdict(&run, "d"),
            host,
            "round {round}: prov and host agree\n{run}"
        );
        assert_eq!(host, "confirmed", "round {round}: {run}");
        assert_eq!(
            profile(&dir).as_deref(),
            Some(system.as_str()),
            "round {round}"
        );
        assert_eq!(ws.state()["hosts"]["d"]["system"], system.as_str());
    }
}

#[test]
fn an_activation_that_fails_on_the_host_rolls_back_every_time() {
    let ws = workspace();
    write_systems(&ws, &[("f", "good", "")]);
    ws.write("prov.toml", &host_spec("fails", &["f"], 30, ""));
    ws.ok(&["apply", "--auto-approve"]);
    let good = built(&ws, "f");
    let dir = ws.host_dir("fails", "f");
    for round in 1..=ROUNDS {
        write_systems(
            &ws,
            &[("f", &format!("bad-{round}"), "failActivation = true;")],
        );
        let bad = built(&ws, "f");
        let run = ws.prov(&["apply", "--auto-approve"]);
        let host = host_result(&dir);
        assert_eq!(host, "failed-rolled-back", "round {round}");
        assert_eq!(verdict(&run, "f"), "rolled-back", "round {round}: {run}");
        assert!(
            run.stderr
                .contains("switch-to-configuration exited with status 1"),
            "round {round}: {run}"
        );
        assert!(
            run.stderr.contains(&format!("ROLLED BACK to {good}")),
            "{run}"
        );
        assert_eq!(
            profile(&dir).as_deref(),
            Some(good.as_str()),
            "round {round}"
        );
        let log = activations(&dir);
        assert_eq!(
            log[log.len() - 2..],
            [format!("switch {bad}"), format!("switch {good}")],
            "round {round}"
        );
        assert_eq!(ws.state()["hosts"]["f"]["system"], good.as_str());
    }
}

/// Runs `prov ARGS` and waits at most `limit` for it (a hang fails the test
/// instead of blocking the suite).
fn run_bounded(ws: &Workspace, args: &[&str], limit: Duration) -> crate::harness::Run {
    let mut child = ws
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "prov {args:?} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::harness::run_from(child.wait_with_output().unwrap(), args)
}

#[test]
fn a_profile_that_cannot_be_set_fails_at_once_with_the_hosts_error() {
    // deploy-correctness 3: prov used to wait the whole 600 s for an
    // `activated` file that a failed `nix-env --set` never writes.
    let ws = workspace();
    write_systems(&ws, &[("p", "1", "")]);
    ws.write("prov.toml", &host_spec("profiles", &["p"], 30, ""));
    ws.ok(&["apply", "--auto-approve"]);
    let dir = ws.host_dir("profiles", "p");
    let v1 = built(&ws, "p");
    // The profile becomes a non-empty directory: nix-env cannot replace it.
    let profiles = dir.join("nix/var/nix/profiles");
    std::fs::remove_file(profiles.join("system")).unwrap();
    std::fs::create_dir(profiles.join("system")).unwrap();
    std::fs::write(profiles.join("system/keep"), "x").unwrap();

    write_systems(&ws, &[("p", "2", "")]);
    let run = run_bounded(&ws, &["apply", "--auto-approve"], Duration::from_secs(120));
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr
            .contains("setting the system profile on the host failed"),
        "{run}"
    );
    assert!(
        run.stderr.contains("is not a symlink"),
        "the host's own error: {run}"
    );
    assert_eq!(host_result(&dir), "failed-profile");
    assert_eq!(ws.state()["hosts"]["p"]["system"], v1.as_str());
    assert_eq!(
        activations(&dir),
        [format!("switch {v1}")],
        "nothing activated"
    );
}

/// The latest activation directory on the host.
fn last_activation(dir: &Path) -> std::path::PathBuf {
    let activations = dir.join("nix/var/prov/activations");
    let mut runs: Vec<_> = std::fs::read_dir(&activations)
        .unwrap_or_else(|e| panic!("{}: {e}", activations.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    runs.sort();
    runs.pop().expect("an activation directory")
}

/// Makes every `sleep` on the host take `seconds`, whatever it is asked
/// for, as on a guest under software emulation where each fork and exec is
/// slow: a bind mount over `/usr/bin/sleep` in the host's own mount
/// namespace (the machine's `sleep` is untouched).
fn slow_sleep(dir: &Path, seconds: &str) {
    let real = dir.join("real-sleep");
    std::fs::copy("/usr/bin/sleep", &real).unwrap();
    let slow = dir.join("slow-sleep");
    std::fs::write(
        &slow,
        format!("#!/bin/sh\nexec {} {seconds}\n", real.display()),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["755"])
        .arg(&slow)
        .status()
        .unwrap();
    let init = std::fs::read_to_string(dir.join("init.pid")).unwrap();
    let status = std::process::Command::new("nsenter")
        .args(["-t", init.trim(), "-m", "mount", "--bind"])
        .arg(&slow)
        .arg("/usr/bin/sleep")
        .status()
        .unwrap();
    assert!(status.success(), "bind-mounting the slow sleep");
}

#[test]
fn a_slow_hosts_confirmation_window_is_counted_in_seconds_not_steps() {
    // Under TCG every `sleep 0.05` on the guest took far longer, and the
    // host counted its window in steps: a 10 s window lasted minutes, prov
    // gave up reading the result first and could not tell how it ended.
    let ws = workspace();
    write_systems(&ws, &[("slow", "good", "")]);
    ws.write("prov.toml", &host_spec("slowhost", &["slow"], 10, ""));
    ws.ok(&["apply", "--auto-approve"]);
    let good = built(&ws, "slow");
    let dir = ws.host_dir("slowhost", "slow");
    slow_sleep(&dir, "0.5");
    // A system that cannot be confirmed: it breaks new SSH logins.
    write_systems(&ws, &[("slow", "bad", "breakSsh = true;")]);
    let run = run_bounded(&ws, &["apply", "--auto-approve"], Duration::from_secs(300));
    let activation = last_activation(&dir);
    assert_eq!(host_result(&dir), "rolled-back", "{run}");
    assert_eq!(verdict(&run, "slow"), "rolled-back", "{run}");
    assert_eq!(profile(&dir).as_deref(), Some(good.as_str()), "{run}");
    let mtime = |name: &str| {
        std::fs::metadata(activation.join(name))
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    // From the end of activation to the result: the window, then a quick
    // rollback (no sleeps in it).
    let window = mtime("result").duration_since(mtime("activated")).unwrap();
    assert!(
        window >= Duration::from_secs(10) && window < Duration::from_secs(20),
        "the host took {window:?} to close a 10 s confirmation window"
    );
}
