//! Keeping machines across address changes, against EC2 (moto) and local
//! hosts: `--replace` replaces exactly the instance named, `prov state mv`
//! and `[[moved]]` rename hosts and change `count` indexing without
//! touching a machine, which keeps the names it was created with.

use crate::deploy::{host_spec, write_systems};
use crate::harness::{ec2_spec, Moto, Workspace};
use crate::plan_output::{assert_redacted, check_schema};

const AMI: &str = "ami-12c6146b";

/// The instance id state records at each address, in address order.
fn ids(ws: &Workspace, addresses: &[&str]) -> Vec<String> {
    let state = ws.state();
    addresses
        .iter()
        .map(|a| {
            state["resources"][a]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{a} is not in state"))
                .to_owned()
        })
        .collect()
}

fn assert_plan_empty(ws: &Workspace) {
    let run = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "expected an empty plan:\n{run}");
}

#[test]
fn replace_replaces_exactly_the_named_instance() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    ws.write("prov.toml", &ec2_spec("replace", 2, "t3.micro", AMI));
    ws.ok(&["apply", "--auto-approve"]);
    let before = ids(&ws, &["web[0]", "web[1]"]);

    let plan = ws.prov(&["plan", "--replace", "web[1]", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert_redacted("replace_requested_text", &plan.stdout);
    let typo = ws.prov(&["plan", "--replace", "web"]);
    assert_eq!(typo.code, 1, "{typo}");
    assert!(
        typo.stderr.contains("name one instance (web[0], web[1])"),
        "{typo}"
    );

    let run = ws.ok(&["apply", "--auto-approve", "--replace", "web[1]"]);
    assert!(run.stdout.contains("1 replaced"), "{run}");
    let after = ids(&ws, &["web[0]", "web[1]"]);
    assert_eq!(after[0], before[0], "web[0] is untouched");
    assert_ne!(after[1], before[1], "web[1] is a new instance");
    let live: Vec<String> = moto
        .instances("replace")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(live, after, "the old web[1] is gone");
    assert_plan_empty(&ws);
}

#[test]
fn state_mv_renames_a_host_and_keeps_its_instances() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    let web = ec2_spec("rename", 2, "t3.micro", AMI);
    ws.write("prov.toml", &web);
    ws.ok(&["apply", "--auto-approve"]);
    let before = ids(&ws, &["web[0]", "web[1]"]);
    let serial = ws.state()["serial"].as_u64().unwrap();

    let refused = ws.prov(&["state", "mv", "web[0]", "web[1]"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains("web[1] is already in state"),
        "{refused}"
    );
    assert_eq!(
        ws.state()["serial"],
        serial,
        "a refused move writes nothing"
    );

    let moved = ws.ok(&["state", "mv", "web", "app"]);
    assert_eq!(
        moved.stdout,
        "Moved web[0] to app[0] (the real object is untouched).\nMoved web[1] to app[1] (the real object is untouched).\n"
    );
    ws.write("prov.toml", &web.replace("[hosts.web]", "[hosts.app]"));
    // The instances stay, with the names they were given (their Name and
    // prov:address tags say what they were created as).
    assert_plan_empty(&ws);
    assert_eq!(ids(&ws, &["app[0]", "app[1]"]), before);
    let tagged: Vec<String> = moto
        .instances("rename")
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    assert_eq!(tagged, ["web[0]", "web[1]"]);

    // A change that replaces one makes a new instance, named for its
    // address; the other keeps its names through an update.
    ws.write(
        "prov.toml",
        &web.replace("[hosts.web]", "[hosts.app]")
            .replace("t3.micro", "t3.small"),
    );
    ws.ok(&["apply", "--auto-approve", "--replace", "app[1]"]);
    assert_plan_empty(&ws);
    let after = ids(&ws, &["app[0]", "app[1]"]);
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
    let mut tagged: Vec<(String, String)> = moto.instances("rename");
    tagged.sort();
    let address_of = |id: &str| {
        tagged
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, a)| a.clone())
            .unwrap()
    };
    assert_eq!(address_of(&after[0]), "web[0]");
    assert_eq!(address_of(&after[1]), "app[1]");
}

#[test]
fn a_moved_local_host_keeps_its_container_and_its_system() {
    let ws = crate::deploy::workspace();
    write_systems(&ws, &[("web", "1", "")]);
    let spec = host_spec("keep", &["web"], 30, "");
    ws.write("prov.toml", &spec);
    ws.ok(&["apply", "--auto-approve"]);
    let record = ws.state()["resources"]["web"].clone();
    let dir = ws.host_dir("keep", "web");
    let system = crate::deploy::profile(&dir).unwrap();

    // Renamed in the spec with a [[moved]] entry: the same container, the
    // same system, nothing replaced or activated.
    let renamed = spec.replace("[hosts.web]", "[hosts.app]");
    ws.write(
        "prov.toml",
        &format!("{renamed}\n[[moved]]\nfrom = \"web\"\nto = \"app\"\n"),
    );
    let plan = ws.prov(&["plan", "--json"]);
    assert_eq!(plan.code, 0, "{plan}");
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(plan["summary"]["replace"], 0, "{plan:#}");
    assert_eq!(plan["summary"]["create"], 0, "{plan:#}");
    assert_eq!(plan["summary"]["delete"], 0, "{plan:#}");
    ws.ok(&["apply", "--auto-approve"]);
    assert_plan_empty(&ws);
    let moved = ws.state()["resources"]["app"].clone();
    assert_eq!(moved["id"], record["id"], "{moved:#}");
    assert_eq!(moved["attributes"]["pid"], record["attributes"]["pid"]);
    assert_eq!(crate::deploy::profile(&dir).unwrap(), system);
    assert_eq!(crate::deploy::activations(&dir).len(), 1);
}

#[test]
fn moved_table_renames_and_reindexes_without_replacing() {
    let moto = Moto::start();
    let ws = Workspace::with_moto(&moto);
    let solo =
        "\n[hosts.solo]\ntarget = \"ec2\"\nami = \"ami-12c6146b\"\ninstance_type = \"t3.nano\"\n";
    let base = format!("{}{solo}", ec2_spec("moves", 2, "t3.micro", AMI));
    ws.write("prov.toml", &base);
    ws.ok(&["apply", "--auto-approve"]);
    let before = ids(&ws, &["web[0]", "web[1]", "solo"]);

    let renamed = base.replace("[hosts.web]", "[hosts.app]").replace(
        "instance_type = \"t3.nano\"\n",
        "instance_type = \"t3.nano\"\ncount = 1\n",
    );
    let moves = "\n[[moved]]\nfrom = \"web\"\nto = \"app\"\n\n[[moved]]\nfrom = \"solo\"\nto = \"solo[0]\"\n";
    ws.write("prov.toml", &format!("{renamed}{moves}"));
    let plan = ws.prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert_redacted("moved_table_text", &plan.stdout);
    let json = ws.ok(&["plan", "--json"]).stdout;
    check_schema(&json);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        value["moved"],
        serde_json::json!([
            {"from": "web[0]", "to": "app[0]"},
            {"from": "web[1]", "to": "app[1]"},
            {"from": "solo", "to": "solo[0]"}
        ])
    );
    assert_eq!(value["summary"]["create"], 0, "{json}");
    assert_eq!(value["summary"]["replace"], 0, "{json}");
    assert_eq!(value["summary"]["delete"], 0, "{json}");

    // Planning recorded nothing: the state still has the old addresses.
    assert_eq!(ids(&ws, &["web[0]", "web[1]", "solo"]), before);
    ws.ok(&["apply", "--auto-approve"]);
    assert_eq!(ids(&ws, &["app[0]", "app[1]", "solo[0]"]), before);
    // The [[moved]] entries may stay: there is nothing left to move.
    assert_plan_empty(&ws);

    // A move onto an address that is taken is refused, naming the entry.
    ws.write(
        "prov.toml",
        &format!("{renamed}\n[[moved]]\nfrom = \"app[1]\"\nto = \"app[0]\"\n")
            .replace("count = 2", "count = 1"),
    );
    let refused = ws.prov(&["plan"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused
            .stderr
            .contains("error: [[moved]] from = \"app[1]\" to = \"app[0]\"\n  caused by: app[0] is already in state"),
        "{refused}"
    );
}
