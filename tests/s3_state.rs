//! Team-shared state in S3 (moto): concurrent applies, a killed apply's lock,
//! migration between backends, and the example spec.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{ec2_spec, repo, Moto, Workspace};

/// An EC2 spec of `count` instances whose state lives in `bucket` (default
/// key `DEPLOYMENT/state.json`; the endpoint comes from AWS_ENDPOINT_URL).
fn s3_spec(deployment: &str, count: u32, bucket: &str) -> String {
    format!(
        "{}\n[state]\nbackend = \"s3\"\nbucket = \"{bucket}\"\n",
        ec2_spec(deployment, count, "t3.micro", "ami-12c6146b")
    )
}

/// Creates `bucket` on moto.
fn create_bucket(moto: &Moto, bucket: &str) {
    moto.aws(&["s3api", "create-bucket", "--bucket", bucket]);
}

/// `prov state history` without its header.
fn history_lines(ws: &Workspace) -> Vec<String> {
    let run = ws.ok(&["state", "history"]);
    run.stdout.lines().skip(1).map(str::to_owned).collect()
}

/// `prov state pull --serial S` as JSON for each of `serials`.
fn versions(ws: &Workspace, serials: &[u64]) -> Vec<serde_json::Value> {
    serials
        .iter()
        .map(|s| {
            let run = ws.ok(&["state", "pull", "--serial", &s.to_string()]);
            serde_json::from_str(&run.stdout).unwrap()
        })
        .collect()
}

/// Serials listed by `prov state history`.
fn history_serials(ws: &Workspace) -> Vec<u64> {
    let run = ws.ok(&["state", "history"]);
    run.stdout
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect()
}

/// `(instance id, address)` of every instance recorded in `state`, sorted by
/// address.
fn recorded_instances(state: &serde_json::Value) -> Vec<(String, String)> {
    let mut recorded: Vec<(String, String)> = state["resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["kind"] == "instance")
        .map(|(address, r)| (r["id"].as_str().unwrap().to_owned(), address.clone()))
        .collect();
    recorded.sort_by(|a, b| a.1.cmp(&b.1));
    recorded
}

/// The lock id that a lock message tells to force-unlock.
fn lock_id_in(stderr: &str) -> String {
    let (_, rest) = stderr
        .split_once("prov state force-unlock ")
        .unwrap_or_else(|| panic!("no force-unlock hint in:\n{stderr}"));
    rest.split_whitespace().next().unwrap().to_owned()
}

/// Starts `prov ARGS` paused at `point` (NAME:N) for `secs`, and waits until
/// it says so. Returns the child, what stderr said so far, and a thread that
/// keeps reading the rest (so prov never blocks on a full pipe).
fn spawn_paused(
    ws: &Workspace,
    args: &[&str],
    point: &str,
    secs: u32,
) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut child = ws
        .command(args)
        .env("PROV_TEST_PAUSE_AT", point)
        .env("PROV_TEST_PAUSE_SECS", secs.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut paused = false;
    for _ in 0..10_000 {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("prov: paused at") {
            paused = true;
            break;
        }
    }
    assert!(paused, "the run never reached {point}:\n{seen}");
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });
    (child, seen, rest)
}

/// Waits (at most 10 s) for a killed child to be gone.
fn sigkill(child: &mut Child) {
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn eight_applies_at_once_exactly_one_applies_ten_rounds() {
    const ROUNDS: usize = 10;
    const RUNS: usize = 8;
    let moto = Moto::start();
    create_bucket(&moto, "race-state");
    let total = Instant::now();

    // The serial one uncontended apply ends at: the race must end there too.
    let control = Workspace::with_moto(&moto);
    control.write("prov.toml", &s3_spec("control", 2, "race-state"));
    control.ok(&["apply", "--auto-approve"]);
    let expected_serial = control.state()["serial"].as_u64().unwrap();
    let expected_history = history_serials(&control);

    let mut timings = Vec::new();
    for round in 0..ROUNDS {
        let round_started = Instant::now();
        let deployment = format!("race{round}");
        let ws = Workspace::with_moto(&moto);
        ws.write("prov.toml", &s3_spec(&deployment, 2, "race-state"));
        // Whoever wins the lock pauses two seconds before its first create, so
        // every other run meets the lock held (none can start after the
        // winner finished and find nothing to do).
        let children: Vec<Child> = (0..RUNS)
            .map(|_| {
                ws.command(&["apply", "--auto-approve"])
                    .env("PROV_TEST_PAUSE_AT", "before-create:1")
                    .env("PROV_TEST_PAUSE_SECS", "2")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let runs: Vec<(u32, std::process::Output)> = children
            .into_iter()
            .map(|c| (c.id(), c.wait_with_output().unwrap()))
            .collect();
        let show = |runs: &[(u32, std::process::Output)]| {
            runs.iter()
                .map(|(pid, o)| {
                    format!(
                        "--- pid {pid}: {}\n{}{}",
                        o.status,
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let winners: Vec<u32> = runs
            .iter()
            .filter(|(_, o)| o.status.success())
            .map(|(pid, _)| *pid)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one apply must run\n{}",
            show(&runs)
        );
        let winner = winners[0];
        let mut lock_ids = Vec::new();
        for (pid, o) in runs.iter().filter(|(pid, _)| *pid != winner) {
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(
                o.status.code(),
                Some(1),
                "round {round}, pid {pid}:\n{stderr}"
            );
            for part in [
                "state is locked by",
                &format!("(pid {winner})"),
                "for `apply`",
                "(lock id ",
                "prov state force-unlock",
            ] {
                assert!(
                    stderr.contains(part),
                    "round {round}, pid {pid}: `{part}` missing:\n{stderr}\nall runs:\n{}",
                    show(&runs)
                );
            }
            assert!(
                !String::from_utf8_lossy(&o.stdout).contains("created"),
                "a loser created something:\n{}",
                show(&runs)
            );
            lock_ids.push(lock_id_in(&stderr));
        }
        lock_ids.dedup();
        assert_eq!(lock_ids.len(), 1, "one holder, one lock id: {lock_ids:?}");

        // Only the winner wrote: the same serials as an uncontended apply.
        let state = ws.state();
        assert_eq!(
            state["serial"].as_u64(),
            Some(expected_serial),
            "round {round}"
        );
        assert_eq!(history_serials(&ws), expected_history, "round {round}");
        // Nothing lost: every instance exists once and is recorded.
        let instances = moto.instances(&deployment);
        assert_eq!(
            instances
                .iter()
                .map(|(_, a)| a.as_str())
                .collect::<Vec<_>>(),
            ["web[0]", "web[1]"],
            "round {round}"
        );
        assert_eq!(recorded_instances(&state), instances, "round {round}");
        assert_eq!(state["resources"].as_object().unwrap().len(), 4);
        // The lock was released.
        let plan = ws.prov(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "{plan}");
        assert!(moto
            .keys("race-state", &format!("{deployment}/state.json.lock"))
            .is_empty());
        timings.push(round_started.elapsed());
    }
    eprintln!(
        "race: {ROUNDS} rounds of {RUNS} concurrent applies in {:.1}s (rounds: {})",
        total.elapsed().as_secs_f64(),
        timings
            .iter()
            .map(|t| format!("{:.1}s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[test]
fn sigkill_during_apply_leaves_a_lock_that_force_unlock_clears() {
    let moto = Moto::start();
    create_bucket(&moto, "crash-state");
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &s3_spec("s3crash", 3, "crash-state"));

    // Kill the apply after its second instance exists but before that is
    // saved (the worst window).
    let mut child = ws
        .command(&["apply", "--auto-approve", "--parallelism", "1"])
        .env("PROV_TEST_PAUSE_AT", "after-create:2")
        .env("PROV_TEST_PAUSE_SECS", "30")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let killed_pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let paused = BufReader::new(stderr)
        .lines()
        .take(10_000)
        .map(Result::unwrap)
        .any(|l| l.contains("prov: paused at"));
    assert!(paused, "the apply never reached after-create:2");
    sigkill(&mut child);

    // The lock stays, and says whose it is.
    let blocked = ws.prov(&["apply", "--auto-approve"]);
    assert_eq!(blocked.code, 1, "{blocked}");
    let holder = blocked
        .stderr
        .split_once("state is locked by ")
        .and_then(|(_, rest)| rest.split_once(" (pid "))
        .map(|(who, _)| who.to_owned())
        .unwrap_or_default();
    assert!(holder.contains('@'), "no user@host holder:\n{blocked}");
    for part in [
        "state is locked by",
        &format!("(pid {killed_pid})"),
        " since ",
        "for `apply`",
        "(lock id ",
        "If that run is gone, release the lock with: prov state force-unlock ",
    ] {
        assert!(
            blocked.stderr.contains(part),
            "`{part}` missing:\n{blocked}"
        );
    }
    let id = lock_id_in(&blocked.stderr);
    assert!(
        blocked.stderr.contains(&format!("(lock id {id})")),
        "{blocked}"
    );
    let lock_key = "s3crash/state.json.lock";
    assert_eq!(moto.keys("crash-state", lock_key), [lock_key]);
    // `plan` is refused the same way.
    let plan = ws.prov(&["plan"]);
    assert_eq!(plan.code, 1, "{plan}");
    assert!(plan.stderr.contains(&id), "{plan}");

    // A wrong id is refused and changes nothing.
    let wrong = ws.prov(&["state", "force-unlock", "not-the-id"]);
    assert_eq!(wrong.code, 1, "{wrong}");
    assert!(wrong.stderr.contains("does not match"), "{wrong}");
    assert!(wrong.stderr.contains(&id), "{wrong}");

    let unlocked = ws.ok(&["state", "force-unlock", &id]);
    assert!(
        unlocked.stdout.contains(&format!("Released lock {id}")),
        "{unlocked}"
    );
    assert!(moto.keys("crash-state", lock_key).is_empty());

    // Apply converges: three instances, none duplicated, all recorded.
    let run = ws.ok(&["apply", "--auto-approve"]);
    let instances = moto.instances("s3crash");
    assert_eq!(
        instances
            .iter()
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>(),
        ["web[0]", "web[1]", "web[2]"],
        "{run}"
    );
    let state = ws.state();
    assert_eq!(recorded_instances(&state), instances);
    assert!(state["resources"]
        .as_object()
        .unwrap()
        .values()
        .all(|r| r["status"] == "ready"));
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
    // History on S3 lists every serial up to the current one.
    let serials = history_serials(&ws);
    let current = state["serial"].as_u64().unwrap();
    assert_eq!(serials.last(), Some(&current));
    assert!(serials.windows(2).all(|w| w[1] == w[0] + 1), "{serials:?}");
}

#[test]
fn migration_embedded_to_s3_and_back_keeps_the_document() {
    let moto = Moto::start();
    create_bucket(&moto, "migrate-state");
    let ws = Workspace::with_moto(&moto);
    let embedded_spec = ec2_spec("moving", 2, "t3.micro", "ami-12c6146b");
    ws.write("prov.toml", &embedded_spec);
    ws.ok(&["apply", "--auto-approve"]);
    let before = ws.state();
    let history_before = history_serials(&ws);
    assert!(history_before.len() >= 2, "{history_before:?}");
    // Serial, when, by whom, resource count: all kept by the migrations.
    let lines_before = history_lines(&ws);
    let versions_before = versions(&ws, &history_before);

    // Embedded -> S3.
    let url = "s3://migrate-state/team/moving.json";
    let run = ws.ok(&["state", "migrate", "--to", url]);
    assert!(
        run.stdout.contains(&format!(
            "Migrated {} version(s) of deployment `moving`",
            history_before.len()
        )),
        "{run}"
    );
    for part in [
        "to   S3 state at s3://migrate-state/team/moving.json",
        "backend = \"s3\"",
        "bucket = \"migrate-state\"",
        "key = \"team/moving.json\"",
        "The old state was left as it was",
    ] {
        assert!(run.stdout.contains(part), "`{part}` missing:\n{run}");
    }
    assert_eq!(ws.state(), before, "the source is unchanged");
    let mut objects = moto.keys("migrate-state", "team/");
    objects.sort();
    assert!(
        objects.contains(&"team/moving.json".to_owned()),
        "{objects:?}"
    );
    assert_eq!(
        objects.iter().filter(|k| k.contains(".history/")).count(),
        history_before.len()
    );
    assert!(!objects.iter().any(|k| k.ends_with(".lock")), "{objects:?}");

    // Point the spec at S3: the same document, serial and history.
    ws.write(
        "prov.toml",
        &format!("{embedded_spec}\n[state]\nbackend = \"s3\"\nbucket = \"migrate-state\"\nkey = \"team/moving.json\"\n"),
    );
    assert_eq!(ws.state(), before);
    assert_eq!(history_serials(&ws), history_before);
    assert_eq!(history_lines(&ws), lines_before);
    assert_eq!(versions(&ws, &history_before), versions_before);
    let serial = before["serial"].as_u64().unwrap();
    let oldest = ws.ok(&["state", "pull", "--serial", &history_before[0].to_string()]);
    assert!(oldest
        .stdout
        .contains(&before["lineage"].as_str().unwrap().to_owned()));
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
    let again = ws.ok(&["state", "migrate", "--to", url]);
    assert!(again.stdout.contains("already lives at"), "{again}");

    // S3 -> embedded (a new directory).
    let run = ws.ok(&["state", "migrate", "--to", "embedded:back"]);
    assert!(run.stdout.contains("to   embedded state at back"), "{run}");
    assert!(run.stdout.contains("path = \"back\""), "{run}");
    ws.write(
        "prov.toml",
        &format!("{embedded_spec}\n[state]\npath = \"back\"\n"),
    );
    let after = ws.state();
    assert_eq!(after, before, "the round trip changed the document");
    assert_eq!(after["serial"].as_u64(), Some(serial));
    assert_eq!(history_serials(&ws), history_before);
    assert_eq!(history_lines(&ws), lines_before);
    assert_eq!(versions(&ws, &history_before), versions_before);
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");

    // The S3 copy already holds exactly this state.
    let same = ws.ok(&["state", "migrate", "--to", url]);
    assert!(same.stdout.contains("already holds this state"), "{same}");
    // A change on the embedded side migrates as just the new version.
    ws.ok(&["state", "rm", "web[1]"]);
    let run = ws.ok(&["state", "migrate", "--to", url]);
    assert!(run.stdout.contains("Migrated 1 version(s)"), "{run}");
    assert!(
        run.stdout
            .contains(&format!("serials {}..={}", serial + 1, serial + 1)),
        "{run}"
    );

    // Refused: a target with a newer serial (the first embedded state is
    // now behind the S3 copy) ...
    ws.write(
        "old.toml",
        &format!("{embedded_spec}\n[state]\npath = \".prov\"\n"),
    );
    let refused = ws.prov(&["-f", "old.toml", "state", "migrate", "--to", url]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("newer serial"), "{refused}");
    // ... and a target holding another deployment's lineage.
    let other = Workspace::with_moto(&moto);
    other.write(
        "prov.toml",
        &ec2_spec("intruder", 1, "t3.micro", "ami-12c6146b"),
    );
    other.ok(&["apply", "--auto-approve"]);
    let refused = other.prov(&["state", "migrate", "--to", url]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("another lineage"), "{refused}");
    // Nothing of either refusal reached S3.
    ws.write(
        "prov.toml",
        &format!("{embedded_spec}\n[state]\nbackend = \"s3\"\nbucket = \"migrate-state\"\nkey = \"team/moving.json\"\n"),
    );
    let now = ws.state();
    assert_eq!(now["serial"].as_u64(), Some(serial + 1));
    assert_eq!(now["lineage"], before["lineage"]);
}

#[test]
fn team_example_keeps_its_state_in_s3() {
    let moto = Moto::start();
    create_bucket(&moto, "prov-team-state");
    let ws = Workspace::with_moto(&moto);
    let spec = repo().join("examples/team-s3.toml");
    let spec = spec.to_str().unwrap();
    ws.ok(&["-f", spec, "apply", "--auto-approve"]);
    assert_eq!(moto.instances("team").len(), 2);
    let objects = moto.keys("prov-team-state", "team/");
    assert!(
        objects.contains(&"team/state.json".to_owned()),
        "{objects:?}"
    );
    assert!(!ws.path().join(".prov").exists());
    let plan = ws.prov(&["-f", spec, "plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
    ws.ok(&["-f", spec, "destroy", "--auto-approve"]);
    assert!(moto.instances("team").is_empty());
}

#[test]
fn s3_state_settings_are_checked() {
    let ws = Workspace::new();
    let head = "deployment = \"d\"\n[state]\n";
    for (body, located, words) in [
        ("backend = \"s3\"\n", "prov.toml:3:11", "needs `bucket`"),
        (
            "backend = \"s3\"\nbucket = \"B\"\n",
            "prov.toml:4:10",
            "not a valid S3 bucket name",
        ),
        (
            "backend = \"gcs\"\n",
            "prov.toml:3:11",
            "unknown state backend `gcs`",
        ),
        (
            "bucket = \"b-1\"\n",
            "prov.toml:3:10",
            "needs `backend = \"s3\"`",
        ),
        (
            "backend = \"s3\"\nbucket = \"b-1\"\npath = \"x\"\n",
            "prov.toml:5:8",
            "`path` is for the embedded backend",
        ),
        (
            "backend = \"s3\"\nbucket = \"b-1\"\nacl = \"x\"\n",
            "prov.toml:5:1",
            "acl",
        ),
    ] {
        ws.write("prov.toml", &format!("{head}{body}"));
        let run = ws.prov(&["validate"]);
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stderr.contains(located), "{located}:\n{run}");
        assert!(run.stderr.contains(words), "{words}:\n{run}");
    }
    ws.write(
        "prov.toml",
        &format!("{head}backend = \"s3\"\nbucket = \"b-1\"\n"),
    );
    let run = ws.prov(&["--state-dir", "elsewhere", "state", "list"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr
            .contains("keeps its state in S3 (s3://b-1/d/state.json)"),
        "{run}"
    );
    ws.write(
        "prov.toml",
        &format!("{head}backend = \"s3\"\nbucket = \"b-1\"\nkey = \"k/s.json\"\nworkspace = \"staging\"\n"),
    );
    let run = ws.prov(&["--state-dir", "elsewhere", "state", "list"]);
    assert!(
        run.stderr
            .contains("(s3://b-1/workspaces/staging/k/s.json)"),
        "{run}"
    );
}

/// Ctrl-C during an apply on S3 state, while a create call is in flight:
/// prov stops starting work, saves what it knows, releases the S3 lock and
/// exits 130 within 10 s; the next apply converges without duplicates.
#[test]
fn sigint_during_an_s3_apply_saves_state_releases_the_lock_and_exits_130() {
    let moto = Moto::start();
    create_bucket(&moto, "int-state");
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &s3_spec("s3int", 6, "int-state"));

    // The fifth create call (after the key pair, the security group and two
    // instances) hangs: paused after the instance exists, before prov saves
    // its id, the worst moment to be interrupted.
    let (child, seen, rest) = spawn_paused(
        &ws,
        &["apply", "--auto-approve", "--parallelism", "1"],
        "after-create:5",
        60,
    );
    let interrupted_at = Instant::now();
    crate::harness::sigint(child.id());
    let output = crate::harness::wait_exit(child, Duration::from_secs(10));
    let took = interrupted_at.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = format!("{seen}{}", rest.join().unwrap());
    let code = output.status.code().unwrap_or(-1);
    eprintln!("the interrupted apply exited {code} {took:?} after SIGINT:\n{stderr}");
    assert_eq!(
        code, 130,
        "Ctrl-C exits 130 (after {took:?}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");

    // No lock is left: the next command runs without force-unlock.
    let lock_key = "s3int/state.json.lock";
    assert!(
        moto.keys("int-state", lock_key).is_empty(),
        "the lock was released:\n{stderr}"
    );
    // What finished was saved: the two instances created before the
    // interruption are recorded.
    let state = ws.state();
    let ready = state["resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["kind"] == "instance" && r["status"] == "ready")
        .count();
    assert_eq!(ready, 2, "{state:#}");

    // The next apply converges: six instances, one per address, all recorded.
    let run = ws.ok(&["apply", "--auto-approve"]);
    let instances = moto.instances("s3int");
    assert_eq!(
        instances
            .iter()
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>(),
        ["web[0]", "web[1]", "web[2]", "web[3]", "web[4]", "web[5]"],
        "{run}"
    );
    let state = ws.state();
    assert_eq!(recorded_instances(&state), instances);
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
}

/// state-hardening 10: a holder whose S3 lock was force-unlocked kept
/// creating instances and writing state. Two prov processes: the first is
/// paused right after its first instance exists, the second force-unlocks
/// its lock; the first stops at its next save, creates nothing more, and
/// the next apply adopts what it made.
#[test]
fn a_force_unlocked_s3_apply_stops_at_its_next_save_and_creates_nothing_more() {
    let moto = Moto::start();
    create_bucket(&moto, "broken-lock");
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &s3_spec("s3broken", 4, "broken-lock"));

    // Creates: the key pair, the security group, then the instances.
    let (child, seen, rest) = spawn_paused(
        &ws,
        &["apply", "--auto-approve", "--parallelism", "1"],
        "after-create:3",
        6,
    );

    let blocked = ws.prov(&["plan"]);
    assert_eq!(blocked.code, 1, "{blocked}");
    let id = lock_id_in(&blocked.stderr);
    ws.ok(&["state", "force-unlock", &id]);

    let output = crate::harness::wait_exit(child, Duration::from_secs(60));
    let stderr = format!("{seen}{}", rest.join().unwrap());
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("force-unlocked"), "{stderr}");
    assert_eq!(
        moto.instances("s3broken").len(),
        1,
        "nothing was created after the lock was broken:\n{stderr}"
    );

    ws.ok(&["apply", "--auto-approve"]);
    assert_eq!(moto.instances("s3broken").len(), 4, "the first was adopted");
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
    ws.ok(&["destroy", "--auto-approve"]);
}
