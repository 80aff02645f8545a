//! Ephemeral environments against real moto and local hosts: `prov env up`
//! side by side on one S3 state, `env run` and its cancellation, `gc` with
//! orphans, `env down` without the spec, and `env ls` over 500.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{self, run_from, wait_exit, Moto, Workspace};

const AMI: &str = "ami-12c6146b";

/// A deployment with an EC2 instance (with its key pair and security
/// group) and a local host; state in S3 when `bucket` is given.
fn spec(deployment: &str, bucket: Option<&str>) -> String {
    let state = bucket.map_or_else(String::new, |b| {
        format!("\n[state]\nbackend = \"s3\"\nbucket = \"{b}\"\n")
    });
    format!(
        r#"deployment = "{deployment}"

[providers.ec2]
region = "us-east-1"

[key_pairs.deploy]
public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBztx5z6E+BsKT1rOWLRrTKL3Iz0o+A3cm1fDwXnElVW test"

[security_groups.web]
description = "web"

[hosts.web]
target = "ec2"
ami = "{AMI}"
instance_type = "t3.micro"
key_pair = "deploy"
security_groups = ["web"]
tags = {{ stage = "${{env}}" }}

[hosts.box]
target = "local"

[outputs]
box_address = "box.address"
{state}"#
    )
}

/// An EC2 instance only (its create is the first and only one).
fn instance_spec(deployment: &str, bucket: &str) -> String {
    format!(
        "deployment = \"{deployment}\"\n[providers.ec2]\nregion = \"us-east-1\"\n\
         [hosts.web]\ntarget = \"ec2\"\nami = \"{AMI}\"\ninstance_type = \"t3.micro\"\n\
         [state]\nbackend = \"s3\"\nbucket = \"{bucket}\"\n"
    )
}

/// Live instances whose tag `key` is `value`, as (id, tags).
fn instances_tagged(
    moto: &Moto,
    key: &str,
    value: &str,
) -> Vec<(String, serde_json::Map<String, serde_json::Value>)> {
    let filter = format!("Name=tag:{key},Values={value}");
    let out = moto.aws(&[
        "ec2",
        "describe-instances",
        "--filters",
        &filter,
        "Name=instance-state-name,Values=pending,running,stopping,stopped",
    ]);
    let mut found = Vec::new();
    for reservation in out["Reservations"].as_array().unwrap() {
        for instance in reservation["Instances"].as_array().unwrap() {
            let tags = instance["Tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| (t["Key"].as_str().unwrap().to_owned(), t["Value"].clone()))
                .collect();
            found.push((instance["InstanceId"].as_str().unwrap().to_owned(), tags));
        }
    }
    found
}

/// Whether instance `id` is still live (not terminated).
fn live(moto: &Moto, id: &str) -> bool {
    let out = moto.aws(&["ec2", "describe-instances", "--instance-ids", id]);
    let state = &out["Reservations"][0]["Instances"][0]["State"]["Name"];
    !matches!(state.as_str(), Some("terminated" | "shutting-down"))
}

/// Starts an instance with `tags` (`KEY=VALUE`) the way another tool would.
fn plant(moto: &Moto, tags: &[(&str, &str)]) -> String {
    let mut args = vec![
        "ec2".to_owned(),
        "run-instances".to_owned(),
        "--image-id".to_owned(),
        AMI.to_owned(),
        "--count".to_owned(),
        "1".to_owned(),
    ];
    if !tags.is_empty() {
        let list: Vec<String> = tags
            .iter()
            .map(|(k, v)| format!("{{Key={k},Value={v}}}"))
            .collect();
        args.push("--tag-specifications".to_owned());
        args.push(format!("ResourceType=instance,Tags=[{}]", list.join(",")));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = moto.aws(&args);
    out["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Lines of a child's pipe as they come.
fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most `limit`) for a line containing `needle`; the lines seen.
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return seen;
        }
    }
    panic!(
        "no line with `{needle}` within {limit:?}; saw:\n{}",
        seen.join("\n")
    );
}

/// `prov env ls --json` (extra args first) as JSON.
fn ls(ws: &Workspace, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = extra.to_vec();
    args.extend(["env", "ls", "--json"]);
    let run = ws.ok(&args);
    serde_json::from_str::<serde_json::Value>(&run.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Whether the local host `name` of `naming` has a directory.
fn host_dir_exists(ws: &Workspace, naming: &str, name: &str) -> bool {
    ws.host_dir(naming, name).exists()
}

fn spawn(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = ws.command(args);
    command
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.spawn().unwrap()
}

#[test]
fn environments_side_by_side_on_one_s3_state_and_one_name_admits_one_run() {
    let moto = Moto::start();
    moto.aws(&["s3api", "create-bucket", "--bucket", "envs"]);
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &spec("shop", Some("envs")));

    // Two names at once: both come up, apart.
    let a = spawn(&ws, &["env", "up", "a", "--ttl", "2h"], &[]);
    let b = spawn(&ws, &["env", "up", "b", "--ttl", "2h"], &[]);
    for (name, child) in [("a", a), ("b", b)] {
        let run = run_from(
            wait_exit(child, Duration::from_secs(120)),
            &["env", "up", name],
        );
        assert_eq!(run.code, 0, "{run}");
    }
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let found = instances_tagged(&moto, "prov:env", name);
        assert_eq!(found.len(), 1, "one instance of {name}: {found:?}");
        let tags = &found[0].1;
        assert_eq!(tags["prov:deployment"], "shop");
        assert_eq!(tags["Name"], format!("shop-{name}-web").as_str());
        assert_eq!(tags["stage"], name, "${{env}} in a tag");
        for key in ["prov:env-id", "prov:expires-at", "prov:owner"] {
            assert!(
                tags.contains_key(key),
                "{key} on {name}'s instance: {tags:?}"
            );
        }
        ids.push(tags["prov:env-id"].as_str().unwrap().to_owned());
        assert!(host_dir_exists(&ws, &format!("shop-{name}"), "box"));
        let kp = moto.aws(&[
            "ec2",
            "describe-key-pairs",
            "--key-names",
            &format!("shop-{name}-deploy"),
        ]);
        assert_eq!(kp["KeyPairs"].as_array().unwrap().len(), 1);
    }
    assert_ne!(ids[0], ids[1]);
    let address = |name: &str| {
        std::fs::read_to_string(ws.host_dir(&format!("shop-{name}"), "box").join("address"))
            .unwrap()
    };
    assert_ne!(
        address("a"),
        address("b"),
        "local hosts of two environments"
    );
    let listed = ls(&ws, &[]);
    let names: Vec<&str> = listed.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    for env in &listed {
        assert_eq!(env["status"], "active");
        assert_eq!(env["resources"], 4, "{env}");
        assert!(
            env["owner"].is_string() && env["expires"].is_string() && env["created"].is_string()
        );
    }
    // The deployment itself has no state: environments are apart from it.
    assert!(moto
        .keys("envs", "shop/state.json")
        .iter()
        .all(|k| k.starts_with("shop/state.json.envs/")));

    // One name twice at once: the second names the holder.
    let first = spawn(
        &ws,
        &["env", "up", "c"],
        &[
            ("PROV_TEST_PAUSE_AT", "before-create:1"),
            ("PROV_TEST_PAUSE_SECS", "4"),
        ],
    );
    let pid = first.id();
    let mut first = first;
    let stderr = lines(first.stderr.take().unwrap());
    wait_line(&stderr, "paused at before-create", Duration::from_secs(60));
    let second = ws.prov(&["env", "up", "c"]);
    assert_ne!(second.code, 0, "{second}");
    assert!(
        second.stderr.contains(&format!("pid {pid}")) && second.stderr.contains("env up c"),
        "the loser names the holder:\n{second}"
    );
    let run = run_from(
        wait_exit(first, Duration::from_secs(120)),
        &["env", "up", "c"],
    );
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(ls(&ws, &[]).len(), 3);

    // Down from state alone: the spec is gone.
    std::fs::remove_file(ws.path().join("prov.toml")).unwrap();
    for name in ["a", "b", "c"] {
        ws.ok(&["env", "down", name, "--state", "s3://envs/shop/state.json"]);
        assert!(!host_dir_exists(&ws, &format!("shop-{name}"), "box"));
    }
    assert!(
        moto.instances("shop").is_empty(),
        "{:?}",
        moto.instances("shop")
    );
    let kps = moto.aws(&[
        "ec2",
        "describe-key-pairs",
        "--filters",
        "Name=tag:prov:deployment,Values=shop",
    ]);
    assert_eq!(kps["KeyPairs"].as_array().unwrap().len(), 0, "{kps}");
    assert_eq!(moto.keys("envs", "shop/"), Vec::<String>::new());
    let listed = ws.ok(&["env", "ls", "--state", "s3://envs/shop/state.json"]);
    assert!(listed.stdout.contains("No environments"), "{listed}");
}

#[test]
fn env_run_exits_with_the_command_status_and_leaves_nothing() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &spec("runs", None));
    let run = ws.prov(&[
        "env",
        "run",
        "--ttl",
        "1h",
        "--name",
        "r1",
        "--",
        "sh",
        "-c",
        "echo \"$PROV_ENV $PROV_OUTPUT_BOX_ADDRESS\" > seen.txt; exit 7",
    ]);
    assert_eq!(run.code, 7, "{run}");
    let seen = std::fs::read_to_string(ws.path().join("seen.txt")).unwrap();
    assert!(seen.starts_with("r1 127.0.0."), "{seen}");
    assert!(moto.instances("runs").is_empty());
    assert!(instances_tagged(&moto, "prov:env", "r1").is_empty());
    assert!(!host_dir_exists(&ws, "runs-r1", "box"));
    assert!(!ws.path().join(".prov/envs/r1").exists(), "no state left");
    assert!(ws.ok(&["env", "ls"]).stdout.contains("No environments"));
}

#[test]
fn a_cancelled_env_run_is_doomed_within_five_seconds_and_gc_finishes_it() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &spec("cancel", None));
    let mut child = spawn(
        &ws,
        &["env", "run", "--name", "s1", "--", "sleep", "600"],
        &[],
    );
    let stdout = lines(child.stdout.take().unwrap());
    wait_line(&stdout, "Running sleep", Duration::from_secs(120));
    let started = Instant::now();
    harness::sigint(child.id());
    let output = wait_exit(child, Duration::from_secs(15));
    let took = started.elapsed();
    let run = run_from(output, &["env", "run", "--", "sleep", "600"]);
    assert_eq!(run.code, 130, "{run}");
    assert!(
        took <= Duration::from_secs(5),
        "exited {took:?} after SIGINT\n{run}"
    );
    assert!(run.stderr.contains("doomed"), "{run}");
    eprintln!("env run exited {took:?} after SIGINT\n{run}");
    let listed = ls(&ws, &[]);
    if let Some(env) = listed.first() {
        assert_eq!(env["status"], "doomed", "{env}");
    }

    let gc = ws.ok(&["gc", "--yes"]);
    assert!(moto.instances("cancel").is_empty(), "{gc}");
    assert!(!host_dir_exists(&ws, "cancel-s1", "box"), "{gc}");
    assert!(!ws.path().join(".prov/envs/s1").exists(), "{gc}");
    let again = ws.ok(&["gc"]);
    assert!(again.stdout.contains("Nothing to collect."), "{again}");
}

#[test]
fn gc_collects_what_a_killed_env_up_made_and_leaves_others_alone() {
    let moto = Moto::start();
    moto.aws(&["s3api", "create-bucket", "--bucket", "gc-state"]);
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &instance_spec("fleet", "gc-state"));
    let mut child = spawn(
        &ws,
        &["env", "up", "k", "--ttl", "1h"],
        &[("PROV_TEST_PAUSE_AT", "after-create:1")],
    );
    let stderr = lines(child.stderr.take().unwrap());
    wait_line(&stderr, "paused at after-create", Duration::from_secs(60));
    harness::signal(child.id(), "KILL");
    let _ = child.wait();
    let made = instances_tagged(&moto, "prov:env", "k");
    assert_eq!(made.len(), 1, "the create went through: {made:?}");
    let made = made[0].0.clone();
    assert!(
        !moto
            .keys("gc-state", "fleet/state.json.envs/k/state.json.lock")
            .is_empty(),
        "its lock is left"
    );

    let other = plant(
        &moto,
        &[
            ("prov:deployment", "other"),
            ("prov:env", "k"),
            ("prov:expires-at", "2020-01-01T00:00:00Z"),
        ],
    );
    let untagged = plant(&moto, &[]);
    let orphan = plant(
        &moto,
        &[
            ("prov:deployment", "fleet"),
            ("prov:env", "gone"),
            ("prov:env-id", "00000000-0000-0000-0000-000000000000"),
            ("prov:expires-at", "2020-01-01T00:00:00Z"),
        ],
    );
    let later = (chrono::Utc::now() + chrono::Duration::hours(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let gc = |args: &[&str]| {
        let mut command = ws.command(args);
        command.env("PROV_NOW", &later);
        run_from(command.output().unwrap(), args)
    };

    let dry = gc(&["gc", "--orphans", "--json"]);
    assert_eq!(dry.code, 0, "{dry}");
    let report: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    let envs: Vec<&str> = report["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(envs, ["k"], "{report}");
    assert_eq!(report["environments"][0]["status"], "due");
    let orphans: Vec<&str> = report["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(orphans, [orphan.as_str()], "{report}");
    for id in [&made, &other, &untagged, &orphan] {
        assert!(live(&moto, id), "a dry run deletes nothing: {id}");
    }

    let yes = gc(&["gc", "--orphans", "--yes", "--json"]);
    assert_eq!(yes.code, 0, "{yes}");
    let report: serde_json::Value = serde_json::from_str(&yes.stdout).unwrap();
    assert_eq!(report["environments"][0]["result"], "destroyed", "{report}");
    assert_eq!(report["orphans"][0]["result"], "deleted", "{report}");
    assert!(!live(&moto, &made), "the killed run's instance is gone");
    assert!(!live(&moto, &orphan), "the orphan is gone");
    assert!(live(&moto, &other), "another deployment's instance stays");
    assert!(live(&moto, &untagged), "an untagged instance stays");
    assert_eq!(
        moto.keys("gc-state", "fleet/state.json.envs/"),
        Vec::<String>::new()
    );
    let again = gc(&["gc", "--orphans"]);
    assert!(again.stdout.contains("Nothing to collect."), "{again}");
}

#[test]
fn env_down_after_the_spec_is_deleted_destroys_everything() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &spec("gone", None));
    ws.ok(&["env", "up", "e"]);
    assert_eq!(instances_tagged(&moto, "prov:env", "e").len(), 1);
    assert!(host_dir_exists(&ws, "gone-e", "box"));
    let output = ws.ok(&["--env", "e", "output", "box_address"]);
    assert!(output.stdout.starts_with("127.0.0."), "{output}");
    // The deployment itself still works beside its environments (its
    // state directory holds theirs).
    ws.ok(&["apply", "--auto-approve", "--on", "key_pair.deploy"]);
    ws.ok(&["destroy", "--auto-approve"]);
    std::fs::remove_file(ws.path().join("prov.toml")).unwrap();
    let down = ws.ok(&["env", "down", "e"]);
    assert!(down.stdout.contains("is down"), "{down}");
    assert!(moto.instances("gone").is_empty());
    assert!(!host_dir_exists(&ws, "gone-e", "box"));
    assert!(!ws.path().join(".prov/envs/e").exists());
    let groups = moto.aws(&[
        "ec2",
        "describe-security-groups",
        "--filters",
        "Name=tag:prov:deployment,Values=gone",
    ]);
    assert_eq!(groups["SecurityGroups"].as_array().unwrap().len(), 0);
}

#[test]
fn env_ls_lists_500_environments_from_one_listing() {
    let moto = Moto::start();
    moto.aws(&["s3api", "create-bucket", "--bucket", "many"]);
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &instance_spec("many", "many"));
    let staged = ws.path().join("staged");
    for i in 0..500 {
        let name = format!("e{i:03}");
        let doc = serde_json::json!({
            "format_version": 1,
            "lineage": format!("00000000-0000-0000-0000-{i:012}"),
            "serial": 1,
            "deployment": "many",
            "resources": {},
            "outputs": {},
            "environment": {
                "name": name,
                "id": format!("10000000-0000-0000-0000-{i:012}"),
                "owner": "ci",
                "created": "2026-01-01T00:00:00Z",
                "expires": "2026-01-01T02:00:00Z",
            }
        });
        let path = staged.join(&name).join("state.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, doc.to_string()).unwrap();
    }
    moto.aws(&[
        "s3",
        "cp",
        "--recursive",
        "--quiet",
        staged.to_str().unwrap(),
        "s3://many/many/state.json.envs/",
    ]);
    let mut command = ws.command(&["env", "ls", "--json"]);
    command
        .env("PROV_LOG", "prov_state::s3::store=debug")
        .env("PROV_NOW", "2026-01-01T01:00:00Z");
    let started = Instant::now();
    let run = run_from(command.output().unwrap(), &["env", "ls", "--json"]);
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{run}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(listed.len(), 500);
    assert!(listed
        .iter()
        .all(|e| e["status"] == "active" && e["owner"] == "ci"));
    let calls = |operation: &str| {
        run.stderr
            .lines()
            .filter(|l| l.contains("S3 call") && l.contains(&format!("operation=\"{operation}\"")))
            .count()
    };
    let (lists, gets, total) = (
        calls("ListObjectsV2"),
        calls("GetObject"),
        run.stderr.lines().filter(|l| l.contains("S3 call")).count(),
    );
    println!(
        "env ls --json of 500 environments: {:.2} s, {total} S3 calls ({lists} ListObjectsV2, {gets} GetObject)",
        took.as_secs_f64()
    );
    assert_eq!(
        (lists, gets, total),
        (1, 500, 501),
        "{}",
        run.stderr.lines().take(5).collect::<Vec<_>>().join("\n")
    );
}
