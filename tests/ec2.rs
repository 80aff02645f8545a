//! The core path against a real EC2 API (moto): apply, empty re-plan, in-place
//! update, replacement, removal, drift, destroy, import, outputs.

use crate::harness::{ec2_spec, Moto, Workspace};

const AMI: &str = "ami-12c6146b";
const OTHER_AMI: &str = "ami-1e749f67";

fn applied(moto: &Moto, deployment: &str, count: u32) -> Workspace {
    let ws = Workspace::with_moto(moto);
    ws.write("prov.toml", &ec2_spec(deployment, count, "t3.micro", AMI));
    ws.ok(&["apply", "--auto-approve"]);
    ws
}

fn assert_plan_empty(ws: &Workspace) {
    let run = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "expected an empty plan:\n{run}");
    assert!(run.stdout.contains("No changes."), "{run}");
}

#[test]
fn apply_creates_tagged_instances_and_replan_is_empty() {
    let moto = Moto::start();
    let ws = applied(&moto, "core", 3);
    let instances = moto.instances("core");
    let addresses: Vec<&str> = instances.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(addresses, ["web[0]", "web[1]", "web[2]"]);
    assert_plan_empty(&ws);

    let state = ws.state();
    let recorded: Vec<String> = ["web[0]", "web[1]", "web[2]"]
        .iter()
        .map(|a| state["resources"][a]["id"].as_str().unwrap().to_owned())
        .collect();
    let real: Vec<String> = instances.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(recorded, real);
    assert_eq!(state["resources"]["web[0]"]["status"], "ready");
    assert!(state["resources"]["key_pair.deploy"]["id"].is_string());
    assert!(state["resources"]["security_group.web"]["id"]
        .as_str()
        .unwrap()
        .starts_with("sg-"));
}

#[test]
fn instance_type_change_is_an_in_place_update() {
    let moto = Moto::start();
    let ws = applied(&moto, "resize", 2);
    let before = moto.instances("resize");
    ws.write("prov.toml", &ec2_spec("resize", 2, "t3.large", AMI));
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(
        plan.stdout.contains("web[0] will be updated in place"),
        "{plan}"
    );
    assert!(
        plan.stdout
            .contains(r#"instance_type = "t3.micro" -> "t3.large""#),
        "{plan}"
    );
    assert!(plan.stdout.contains("stopped and started"), "{plan}");
    assert!(
        plan.stdout
            .contains("0 to create, 2 to update, 0 to replace, 0 to destroy"),
        "{plan}"
    );
    ws.ok(&["apply", "--auto-approve"]);
    assert_eq!(
        moto.instances("resize"),
        before,
        "update in place keeps the instances"
    );
    let described = moto.aws(&["ec2", "describe-instances", "--instance-ids", &before[0].0]);
    assert_eq!(
        described["Reservations"][0]["Instances"][0]["InstanceType"],
        "t3.large"
    );
    assert_plan_empty(&ws);
}

#[test]
fn ami_change_replaces_and_names_ami() {
    let moto = Moto::start();
    let ws = applied(&moto, "reimage", 2);
    let before = moto.instances("reimage");
    ws.write("prov.toml", &ec2_spec("reimage", 2, "t3.micro", OTHER_AMI));
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(
        plan.stdout
            .contains("web[1] must be replaced (ami forces replacement)"),
        "{plan}"
    );
    assert!(plan.stdout.contains("-/+ web[1]"), "{plan}");
    assert!(plan.stdout.contains("# forces replacement"), "{plan}");
    ws.ok(&["apply", "--auto-approve"]);
    let after = moto.instances("reimage");
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|i| !before.contains(i)),
        "both were replaced"
    );
    assert_plan_empty(&ws);
}

#[test]
fn removing_a_host_plans_a_destroy() {
    let moto = Moto::start();
    let ws = applied(&moto, "shrink", 3);
    ws.write("prov.toml", &ec2_spec("shrink", 2, "t3.micro", AMI));
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(
        plan.stdout
            .contains("web[2] will be destroyed (not in the spec)"),
        "{plan}"
    );
    assert!(
        plan.stdout
            .contains("0 to create, 0 to update, 0 to replace, 1 to destroy"),
        "{plan}"
    );
    ws.ok(&["apply", "--auto-approve"]);
    let addresses: Vec<String> = moto
        .instances("shrink")
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    assert_eq!(addresses, ["web[0]", "web[1]"]);
    assert_plan_empty(&ws);
}

#[test]
fn drift_is_shown_and_put_right() {
    let moto = Moto::start();
    let ws = applied(&moto, "drift", 3);
    let instances = moto.instances("drift");
    let (tagged, terminated) = (&instances[0].0, &instances[1].0);
    moto.aws(&[
        "ec2",
        "create-tags",
        "--resources",
        tagged,
        "--tags",
        "Key=role,Value=hacked",
    ]);
    moto.aws(&["ec2", "terminate-instances", "--instance-ids", terminated]);

    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(
        plan.stdout.contains("Objects changed outside prov"),
        "{plan}"
    );
    assert!(
        plan.stdout.contains("web[0] was changed outside prov"),
        "{plan}"
    );
    assert!(
        plan.stdout.contains(r#"role = "web" -> "hacked""#),
        "{plan}"
    );
    assert!(
        plan.stdout.contains("web[1] was deleted outside prov"),
        "{plan}"
    );
    assert!(
        plan.stdout
            .contains("web[1] will be created (deleted outside prov)"),
        "{plan}"
    );
    assert!(
        plan.stdout.contains("web[0] will be updated in place"),
        "{plan}"
    );

    ws.ok(&["apply", "--auto-approve"]);
    assert_plan_empty(&ws);
    let now = moto.instances("drift");
    assert_eq!(now.len(), 3);
    let described = moto.aws(&["ec2", "describe-instances", "--instance-ids", tagged]);
    let tags = described["Reservations"][0]["Instances"][0]["Tags"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        tags.iter()
            .any(|t| t["Key"] == "role" && t["Value"] == "web"),
        "{tags:?}"
    );
}

#[test]
fn destroy_removes_everything_in_reverse_order() {
    let moto = Moto::start();
    let ws = applied(&moto, "teardown", 2);
    let run = ws.ok(&["destroy", "--auto-approve"]);
    assert!(
        run.stdout
            .contains("0 created, 0 updated, 0 replaced, 4 destroyed"),
        "{run}"
    );
    assert!(moto.instances("teardown").is_empty());
    let state = ws.state();
    assert_eq!(state["resources"], serde_json::json!({}));
    let groups = moto.aws(&[
        "ec2",
        "describe-security-groups",
        "--filters",
        "Name=tag:prov:deployment,Values=teardown",
    ]);
    assert_eq!(groups["SecurityGroups"], serde_json::json!([]));
}

#[test]
fn outputs_and_selection() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    let mut spec = ec2_spec("outs", 2, "t3.micro", AMI);
    spec.push_str("\n[outputs]\nids = \"web[*].id\"\nfirst = \"web[0].private_ip\"\n");
    ws.write("prov.toml", &spec);
    // Only web[1] (and what it needs) is created.
    let run = ws.ok(&["apply", "--auto-approve", "--on", "web[1]"]);
    assert!(run.stdout.contains("web[1]: created"), "{run}");
    assert!(!run.stdout.contains("web[0]: created"), "{run}");
    ws.ok(&["apply", "--auto-approve"]);
    let outputs: serde_json::Value =
        serde_json::from_str(&ws.ok(&["output", "--json"]).stdout).unwrap();
    let ids: Vec<String> = moto
        .instances("outs")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(outputs["ids"], serde_json::json!(ids));
    assert!(outputs["first"].as_str().unwrap().contains('.'));
    assert_eq!(
        ws.ok(&["output", "ids"]).stdout.trim(),
        serde_json::json!(ids).to_string()
    );
}

#[test]
fn import_adopts_an_existing_instance() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &ec2_spec("adopt", 1, "t3.micro", AMI));
    ws.ok(&[
        "apply",
        "--auto-approve",
        "--on",
        "key_pair.*,security_group.*",
    ]);
    let sg = ws.state()["resources"]["security_group.web"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = moto.aws(&[
        "ec2",
        "run-instances",
        "--image-id",
        AMI,
        "--instance-type",
        "t3.micro",
        "--count",
        "1",
        "--key-name",
        "adopt-deploy",
        "--security-group-ids",
        &sg,
    ]);
    let id = run["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let imported = ws.ok(&["import", "web[0]", &id]);
    assert!(imported.stdout.contains(&id), "{imported}");
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(plan.stdout.contains(&format!("~ web[0] ({id})")), "{plan}");
    ws.ok(&["apply", "--auto-approve"]);
    assert_plan_empty(&ws);
    assert_eq!(moto.instances("adopt"), vec![(id, "web[0]".to_owned())]);
}

/// state-hardening 3: the generation restarted at 1 when an address had no
/// record, so the create after `destroy` (or `state rm`) sent the same
/// ClientToken as the first one, and real EC2 would have answered with the
/// old, terminated instance. moto ignores ClientToken, so this is checked in
/// state: every create of the lineage has its own token.
#[test]
fn idempotency_tokens_never_repeat_after_destroy_or_state_rm() {
    let moto = Moto::start();
    let ws = applied(&moto, "tokens", 1);
    let token = |ws: &Workspace| {
        ws.state()["resources"]["web[0]"]["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = token(&ws);
    ws.ok(&["destroy", "--auto-approve"]);
    ws.ok(&["apply", "--auto-approve"]);
    let after_destroy = token(&ws);
    assert_ne!(first, after_destroy, "the token repeats after destroy");
    ws.ok(&["state", "rm", "web[0]"]);
    ws.ok(&["apply", "--auto-approve"]);
    let after_rm = token(&ws);
    assert_ne!(after_destroy, after_rm, "the token repeats after state rm");
    assert_ne!(first, after_rm);
}

/// state-hardening 11: `import` took an object another address already
/// manages, so two records (and two destroys) named one instance.
#[test]
fn import_refuses_an_object_another_address_manages() {
    let moto = Moto::start();
    let ws = applied(&moto, "dupimport", 2);
    let state = ws.state();
    let first = state["resources"]["web[0]"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ws.ok(&["state", "rm", "web[1]"]);
    let refused = ws.prov(&["import", "web[1]", &first]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains("already managed as web[0]"),
        "{refused}"
    );
    assert!(ws.state()["resources"].get("web[1]").is_none());
}

/// state-hardening 4: an instance stopped outside prov (or left stopped by
/// an update interrupted between stop and start) was never drift, since
/// `state` is computed. A machine that should run and does not is drift
/// that apply puts right.
#[test]
fn a_stopped_instance_is_drift_and_apply_starts_it() {
    let moto = Moto::start();
    let ws = applied(&moto, "stopped", 1);
    let id = ws.state()["resources"]["web[0]"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    moto.aws(&["ec2", "stop-instances", "--instance-ids", &id]);
    let state_of = || {
        moto.aws(&["ec2", "describe-instances", "--instance-ids", &id])["Reservations"][0]
            ["Instances"][0]["State"]["Name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(state_of(), "stopped");

    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "a stopped instance is drift:\n{plan}");
    assert!(
        plan.stdout.contains("web[0] was changed outside prov"),
        "{plan}"
    );
    assert!(plan.stdout.contains("running"), "{plan}");
    assert!(plan.stdout.contains("the instance is started"), "{plan}");
    ws.ok(&["apply", "--auto-approve"]);
    assert_eq!(state_of(), "running");
    assert_eq!(ws.state()["resources"]["web[0]"]["id"], id.as_str());
    assert_plan_empty(&ws);
}
