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
    assert!(run.stdout.starts_with("digraph \"quickstart\" {"), "{run}");
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
