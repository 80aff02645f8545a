//! Command-line basics that need no cloud: every example validates, the graph
//! prints, state commands work on an empty deployment.

use crate::harness::{repo, Workspace};

#[test]
fn every_example_validates() {
    let examples = repo().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let ws = Workspace::new();
            let run = ws.prov(&["validate", "-f", path.to_str().unwrap()]);
            assert_eq!(run.code, 0, "{}:\n{run}", path.display());
            assert!(run.stdout.contains("is valid"), "{run}");
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn graph_prints_dot_with_dependency_edges() {
    let ws = Workspace::new();
    let spec = repo().join("examples/ec2.toml");
    let run = ws.ok(&["graph", "-f", spec.to_str().unwrap()]);
    assert!(
        run.stdout.starts_with("digraph \"quickstart-ec2\" {"),
        "{run}"
    );
    assert!(
        run.stdout.contains("\"web[0]\" -> \"key_pair.deploy\";"),
        "{run}"
    );
    assert!(
        run.stdout.contains("\"web[2]\" -> \"security_group.web\";"),
        "{run}"
    );
}

#[test]
fn state_commands_on_a_new_deployment() {
    let ws = Workspace::new();
    ws.write("prov.toml", "deployment = \"empty\"\n");
    let run = ws.prov(&["state", "list"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("no state yet"), "{run}");
    // An empty deployment plans and applies without any provider.
    ws.ok(&["apply", "--auto-approve"]);
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
}

#[test]
fn apply_without_a_terminal_needs_auto_approve() {
    let ws = Workspace::new();
    ws.write("prov.toml", "deployment = \"x\"\n[key_pairs.k]\npublic_key = \"ssh-ed25519 AAAA k\"\n[providers.ec2]\nregion = \"us-east-1\"\n");
    let run = ws.prov(&["apply", "--refresh=false"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("--auto-approve"), "{run}");
}

#[test]
fn state_history_show_and_push_check_lineage_and_serial() {
    let moto = crate::harness::Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write(
        "prov.toml",
        &crate::harness::ec2_spec("hist", 1, "t3.micro", "ami-12c6146b"),
    );
    ws.ok(&["apply", "--auto-approve"]);
    let history = ws.ok(&["state", "history"]).stdout;
    let serials: Vec<u64> = history
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next()?.parse().ok())
        .collect();
    assert!(serials.len() >= 3, "{history}");
    assert!(serials.windows(2).all(|w| w[1] == w[0] + 1), "{history}");
    let latest = ws.state();
    let serial = latest["serial"].as_u64().unwrap();
    assert_eq!(serial, *serials.last().unwrap());
    let first: serde_json::Value =
        serde_json::from_str(&ws.ok(&["state", "show", "--serial", "1"]).stdout).unwrap();
    assert_eq!(first["serial"], 1);
    assert_eq!(first["lineage"], latest["lineage"]);
    let record: serde_json::Value =
        serde_json::from_str(&ws.ok(&["state", "show", "web[0]"]).stdout).unwrap();
    assert_eq!(record["status"], "ready");

    // An older serial is refused; another lineage too; --force overrides.
    ws.write("old.json", &serde_json::to_string(&first).unwrap());
    let refused = ws.prov(&["state", "push", "old.json"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains("older than the state's serial"),
        "{refused}"
    );
    let mut other = latest.clone();
    other["lineage"] = serde_json::json!("00000000-0000-4000-8000-000000000000");
    ws.write("other.json", &serde_json::to_string(&other).unwrap());
    let refused = ws.prov(&["state", "push", "other.json"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("does not match"), "{refused}");
    ws.ok(&["state", "push", "old.json", "--force"]);
    let now = ws.state();
    assert_eq!(now["serial"].as_u64().unwrap(), serial + 1);
    assert_eq!(now["resources"], first["resources"]);

    // rm forgets a record (the instance stays).
    ws.ok(&["state", "push", "other.json", "--force"]);
    ws.ok(&["state", "rm", "web[0]"]);
    assert!(ws.state()["resources"].get("web[0]").is_none());
    assert_eq!(moto.instances("hist").len(), 1);
}

/// Serials listed by `prov state history`.
fn history_serials(ws: &Workspace) -> Vec<u64> {
    ws.ok(&["state", "history"])
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next()?.parse().ok())
        .collect()
}

/// state-hardening 7: `state history --prune --keep N` keeps the newest N
/// versions, each still readable; `[state] keep_versions` prunes after each
/// apply.
#[test]
fn state_history_prune_keeps_the_newest_versions_and_keep_versions_prunes_after_apply() {
    let moto = crate::harness::Moto::start();
    let ws = Workspace::with_moto(&moto);
    let spec = |count| crate::harness::ec2_spec("prune", count, "t3.micro", "ami-12c6146b");
    ws.write("prov.toml", &spec(2));
    ws.ok(&["apply", "--auto-approve"]);
    let all = history_serials(&ws);
    assert!(all.len() > 3, "{all:?}");
    let middle = all[all.len() - 2];
    let before: serde_json::Value = serde_json::from_str(
        &ws.ok(&["state", "show", "--serial", &middle.to_string()])
            .stdout,
    )
    .unwrap();

    let refused = ws.prov(&["state", "history", "--prune"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("--keep N"), "{refused}");
    let pruned = ws.ok(&["state", "history", "--prune", "--keep", "2"]);
    assert!(
        pruned
            .stderr
            .contains(&format!("Pruned {} version(s)", all.len() - 2)),
        "{pruned}"
    );
    assert_eq!(history_serials(&ws), all[all.len() - 2..]);
    let after: serde_json::Value = serde_json::from_str(
        &ws.ok(&["state", "show", "--serial", &middle.to_string()])
            .stdout,
    )
    .unwrap();
    assert_eq!(after, before, "a kept version reads back unchanged");
    let gone = ws.prov(&["state", "show", "--serial", &all[0].to_string()]);
    assert_eq!(gone.code, 1, "{gone}");
    assert!(
        gone.stderr.contains("no state version with serial"),
        "{gone}"
    );

    ws.write(
        "prov.toml",
        &spec(3).replacen("\n", "\n\n[state]\nkeep_versions = 3\n", 1),
    );
    ws.ok(&["apply", "--auto-approve"]);
    let kept = history_serials(&ws);
    let latest = ws.state()["serial"].as_u64().unwrap();
    assert_eq!(kept, (latest - 2..=latest).collect::<Vec<_>>());
    assert_eq!(ws.state()["resources"].as_object().unwrap().len(), 5);
    ws.ok(&["state", "pull", "--serial", &kept[0].to_string()]);
}

/// state-hardening 11: `state push` of a serial at u64::MAX overflowed the
/// next write (a panic in debug builds), and a document of another
/// deployment or an encrypted envelope was pushed without a word.
#[test]
fn state_push_refuses_a_huge_serial_another_deployment_and_an_envelope() {
    let ws = Workspace::new();
    ws.write(
        "prov.toml",
        "deployment = \"pushcheck\"\n[hosts.box]\ntarget = \"local\"\n",
    );
    ws.ok(&["apply", "--auto-approve"]);
    let latest = ws.state();
    let variants = [
        ("serial", serde_json::json!(u64::MAX), "too large"),
        (
            "deployment",
            serde_json::json!("other"),
            "deployment `other`",
        ),
        (
            "encrypted",
            serde_json::json!("-----BEGIN AGE ENCRYPTED FILE-----"),
            "encrypted envelope",
        ),
    ];
    for (field, value, message) in variants {
        let mut doc = latest.clone();
        doc[field] = value;
        ws.write("pushed.json", &serde_json::to_string(&doc).unwrap());
        let refused = ws.prov(&["state", "push", "pushed.json"]);
        assert_eq!(refused.code, 1, "{field}: {refused}");
        assert!(refused.stderr.contains(message), "{field}: {refused}");
    }
    assert_eq!(ws.state(), latest, "nothing was pushed");
    ws.ok(&["destroy", "--auto-approve"]);
}

/// state-hardening 11: `prov plan` (and validate) on a fresh checkout
/// created `.prov/` with a state database, a lock and a deployer key. They
/// write nothing; the key is made by apply, and the plan says it will be.
#[test]
fn plan_and_validate_on_a_fresh_checkout_write_nothing() {
    let ws = Workspace::new();
    ws.copy_example("systems.nix")
        .copy_example("quickstart.toml");
    let listing = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing(ws.path());
    ws.ok(&["-f", "quickstart.toml", "validate"]);
    let plan = ws.ok(&["-f", "quickstart.toml", "plan"]);
    assert_eq!(
        listing(ws.path()),
        before,
        "plan wrote into the checkout:\n{plan}"
    );
    assert!(
        plan.stdout.contains("generated at apply"),
        "the plan says the deployer key is made by apply:\n{plan}"
    );
    // apply makes the key, and the next plan shows the real one.
    ws.ok(&["-f", "quickstart.toml", "apply", "--auto-approve"]);
    assert!(ws.path().join(".prov/ssh/id_ed25519").exists());
    let plan = ws.ok(&["-f", "quickstart.toml", "plan", "--detailed-exitcode"]);
    assert!(!plan.stdout.contains("generated at apply"), "{plan}");
}

/// state-hardening 8: every version lived in `.prov/state.db/db`; damaged
/// bytes there made sled recover to an empty database without an error
/// (`state list` printed nothing and exited 0; plan would create everything
/// again). Now a copy of the latest version is kept beside it, a database
/// behind its copy is refused naming the copy, and `prov state recover`
/// rebuilds it.
#[test]
fn a_damaged_database_is_refused_and_state_recover_rebuilds_it_from_its_copy() {
    use std::os::unix::fs::PermissionsExt;
    for damage in ["flip", "truncate", "delete"] {
        let ws = Workspace::new();
        ws.write(
            "prov.toml",
            "deployment = \"recover\"\n[hosts.box]\ntarget = \"local\"\n",
        );
        ws.ok(&["apply", "--auto-approve"]);
        let before = ws.state();
        let copy = ws.path().join(".prov/latest.json");
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{damage}");
        let copied: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
        assert_eq!(copied, before, "{damage}: the copy is the latest version");

        let db = ws.path().join(".prov/state.db/db");
        let mut bytes = std::fs::read(&db).unwrap();
        match damage {
            "flip" => {
                // Where sled keeps this small state (it grows the file
                // to a whole segment as it goes, zeros after the data).
                let end = bytes.len().min(2048);
                for b in &mut bytes[64..end] {
                    *b ^= 0xff;
                }
                std::fs::write(&db, &bytes).unwrap();
            }
            "truncate" => std::fs::write(&db, &bytes[..bytes.len().min(1000)]).unwrap(),
            _ => std::fs::remove_dir_all(ws.path().join(".prov/state.db")).unwrap(),
        }
        for args in [
            &["state", "list"][..],
            &["plan"],
            &["apply", "--auto-approve"],
        ] {
            let run = ws.prov(args);
            assert_eq!(run.code, 1, "{damage} {args:?}: {run}");
            assert!(
                run.stderr.contains("latest.json") && run.stderr.contains("prov state recover"),
                "{damage} {args:?}: the error names the copy and the way back:\n{run}"
            );
            assert!(!run.stdout.contains("to create"), "{damage}: {run}");
        }
        let recovered = ws.ok(&["state", "recover"]);
        assert!(recovered.stdout.contains("serial"), "{recovered}");
        assert_eq!(ws.state(), before, "{damage}: the same version is back");
        let kept = std::fs::read_dir(ws.path().join(".prov"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("state.db.damaged-")
            })
            .count();
        if damage != "delete" {
            assert_eq!(kept, 1, "{damage}: the damaged database is kept aside");
        }
        let again = ws.prov(&["state", "recover"]);
        assert_eq!(again.code, 1, "{again}");
        assert!(again.stderr.contains("not damaged"), "{again}");
        let plan = ws.prov(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "{damage}: {plan}");
        ws.ok(&["destroy", "--auto-approve"]);
    }
}

/// `--color` is obeyed on stderr too, above NO_COLOR (which the harness
/// sets): `always` colors the error head even through a pipe, `auto` and
/// `never` leave it plain.
#[test]
fn color_flag_is_obeyed_on_stderr() {
    let ws = Workspace::new();
    ws.write("prov.toml", "deployment = \"empty\"\n");
    let always = ws.prov(&["--color", "always", "state", "list"]);
    assert_eq!(always.code, 1, "{always}");
    assert!(always.stderr.contains("\u{1b}["), "{always}");
    for choice in ["auto", "never"] {
        let plain = ws.prov(&["--color", choice, "state", "list"]);
        assert_eq!(plain.code, 1, "{plain}");
        assert!(plain.stderr.contains("error: "), "{plain}");
        assert!(!plain.stderr.contains('\u{1b}'), "{plain}");
    }
}
