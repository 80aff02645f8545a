//! What people and machines read: plan text (snapshots) and plan JSON
//! (checked against docs/plan.schema.json).

use crate::harness::{repo, Moto, Workspace};

const SPEC: &str = r##"deployment = "shapes"

[providers.ec2]
region = "us-east-1"

[key_pairs.deploy]
public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBztx5z6E+BsKT1rOWLRrTKL3Iz0o+A3cm1fDwXnElVW test"

[security_groups.web]
description = "web"

[[security_groups.web.ingress]]
protocol = "tcp"
from_port = 443
to_port = 443
cidr_blocks = ["0.0.0.0/0"]

[hosts.web]
target = "ec2"
count = 2
ami = "ami-12c6146b"
instance_type = "t3.micro"
key_pair = "deploy"
security_groups = ["web"]
tags = { role = "web" }

[hosts.db]
target = "ec2"
ami = "ami-12c6146b"
instance_type = "t3.small"
key_pair = "deploy"
user_data = "#!/bin/sh\necho db\n"
depends_on = ["web"]

[hosts.cache]
target = "ec2"
ami = "ami-12c6146b"
instance_type = "t3.nano"
"##;

fn changed_spec(subnet: &str) -> String {
    SPEC.replace(
        "instance_type = \"t3.micro\"",
        "instance_type = \"t3.medium\"",
    )
    .replace(
        "instance_type = \"t3.small\"",
        &format!("instance_type = \"t3.small\"\nsubnet = \"{subnet}\""),
    )
    .replace(
        "from_port = 443\nto_port = 443",
        "from_port = 8443\nto_port = 8443",
    )
    .replace(
        "[hosts.cache]\ntarget = \"ec2\"\nami = \"ami-12c6146b\"\ninstance_type = \"t3.nano\"\n",
        "",
    )
}

/// Snapshots `text` with provider ids, addresses and hashes replaced by
/// placeholders (moto makes new ones every run).
pub(crate) fn assert_redacted(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\b(i|sg|key|subnet|vpc)-[0-9a-f]{8,17}\b", "$1-[id]");
    settings.add_filter(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[uuid]",
    );
    settings.add_filter(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", "[ip]");
    settings.add_filter(
        r#""spec_hash": "[0-9a-f]{64}""#,
        r#""spec_hash": "[sha256]""#,
    );
    settings.add_filter(
        r#""prov_version": "[^"]+""#,
        r#""prov_version": "[version]""#,
    );
    settings.bind(|| insta::assert_snapshot!(name, text));
}

pub(crate) fn check_schema(json: &str) {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/plan.schema.json")).unwrap(),
    )
    .unwrap();
    let instance: serde_json::Value = serde_json::from_str(json).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "plan JSON does not match docs/plan.schema.json:\n{}\n{json}",
        errors.join("\n")
    );
}

#[test]
fn plan_for_a_new_deployment() {
    let ws = Workspace::new();
    ws.write("prov.toml", SPEC);
    let run = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 2, "{run}");
    insta::assert_snapshot!("new_deployment_text", run.stdout);
    let json = ws.ok(&["plan", "--json"]).stdout;
    check_schema(&json);
    assert_redacted("new_deployment_json", &json);
}

#[test]
fn plan_with_every_kind_of_change_and_drift() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", SPEC);
    ws.ok(&["apply", "--auto-approve"]);
    let instances = moto.instances("shapes");
    let web0 = &instances.iter().find(|(_, a)| a == "web[0]").unwrap().0;
    moto.aws(&[
        "ec2",
        "create-tags",
        "--resources",
        web0,
        "--tags",
        "Key=owner,Value=alice",
    ]);
    // Move db to another of moto's default subnets.
    let current = ws.state()["resources"]["db"]["attributes"]["subnet_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let subnets = moto.aws(&["ec2", "describe-subnets"]);
    let other = subnets["Subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["SubnetId"].as_str().unwrap().to_owned())
        .find(|s| *s != current)
        .unwrap();
    ws.write("prov.toml", &changed_spec(&other));

    let run = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 2, "{run}");
    assert_redacted("mixed_changes_text", &run.stdout);

    let json = ws.ok(&["plan", "--json"]).stdout;
    check_schema(&json);
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    let actions: Vec<(String, String)> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_owned(),
                c["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("cache", "delete"),
        ("db", "replace"),
        ("web[0]", "update"),
        ("web[1]", "update"),
        ("security_group.web", "update"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(actions, expected);
    assert_eq!(plan["drift"][0]["address"], "web[0]");
    assert_eq!(
        plan["summary"],
        serde_json::json!({"create": 0, "update": 3, "replace": 1, "delete": 1, "deploy": 0})
    );

    // A saved plan applies exactly; applying it twice is refused as stale.
    ws.ok(&["plan", "--out", "changes.plan"]);
    ws.ok(&["apply", "changes.plan"]);
    let again = ws.prov(&["apply", "changes.plan"]);
    assert_eq!(again.code, 1, "{again}");
    assert!(again.stderr.contains("stale"), "{again}");
    let empty = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(empty.code, 0, "{empty}");
}

#[test]
fn a_plan_for_another_deployment_is_refused() {
    let moto = Moto::start();
    let a = Workspace::with_moto(&moto);
    a.write("prov.toml", SPEC);
    a.ok(&["apply", "--auto-approve", "--on", "key_pair.deploy"]);
    a.ok(&["plan", "--out", "a.plan"]);
    let other = Moto::start();
    let b = Workspace::with_moto(&other);
    b.write("prov.toml", SPEC);
    b.ok(&["apply", "--auto-approve", "--on", "key_pair.deploy"]);
    std::fs::copy(a.path().join("a.plan"), b.path().join("a.plan")).unwrap();
    let run = b.prov(&["apply", "a.plan"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("does not match"), "{run}");
}
