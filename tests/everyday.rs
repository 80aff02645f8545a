//! The everyday commands that touch no host: `prov build` (state serial
//! unchanged), `prov show` of a saved plan (encrypted too), shell
//! completions and the manual page, `--json` on `state list`, `state
//! history` and `output`.

use std::process::{Command, Stdio};

use crate::deploy::{host_spec, workspace, write_systems};
use crate::harness::Workspace;

#[test]
fn build_prints_the_systems_the_next_apply_deploys_and_touches_nothing() {
    let ws = workspace();
    write_systems(&ws, &[("alpha", "1", ""), ("beta", "1", "")]);
    ws.write(
        "prov.toml",
        &host_spec("builds", &["alpha", "beta"], 30, ""),
    );
    ws.ok(&["apply", "--auto-approve"]);
    let serial = ws.state()["serial"].clone();
    let activations = |host: &str| crate::deploy::activations(&ws.host_dir("builds", host));

    write_systems(&ws, &[("alpha", "2", ""), ("beta", "2", "")]);
    let built = ws.ok(&["build", "--json"]);
    let systems: serde_json::Value = serde_json::from_str(&built.stdout).unwrap();
    let plan: serde_json::Value = serde_json::from_str(&ws.ok(&["plan", "--json"]).stdout).unwrap();
    let deployed: Vec<(&str, &str)> = plan["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["address"].as_str().unwrap(),
                d["desired"].as_str().unwrap(),
            )
        })
        .collect();
    let reported: Vec<(&str, &str)> = systems
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["hosts"][0].as_str().unwrap(),
                s["system"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(reported, deployed);
    assert!(systems[0]["bytes"].as_u64().unwrap() > 0, "{systems}");

    let text = ws.ok(&["build", "--on", "beta"]);
    let beta = crate::deploy::built(&ws, "beta");
    assert!(
        text.stdout.starts_with(&format!("beta: {beta} (")),
        "{text}"
    );
    assert_eq!(text.stdout.lines().count(), 1, "{text}");

    assert_eq!(ws.state()["serial"], serial, "state untouched");
    assert_eq!(activations("alpha").len(), 1, "host untouched");
    assert_eq!(activations("beta").len(), 1, "host untouched");
    let none = ws.prov(&["build", "--on", "@role=x"]);
    assert_eq!(none.code, 1, "{none}");
}

#[test]
fn show_renders_a_saved_plan_also_encrypted_without_touching_state() {
    let ws = Workspace::new();
    let (identity, public) = crate::secrets::age_identity(&ws, "plan-id");
    let spec = format!(
        "deployment = \"shown\"\n[state]\nencrypt_to = [\"{public}\"]\n[hosts.web]\ntarget = \"local\"\ncount = 2\n"
    );
    ws.write("prov.toml", &spec);
    let env = [("PROV_AGE_IDENTITY", identity.as_str())];
    let with_identity = |args: &[&str]| crate::secrets::prov_with(&ws, args, b"", &env);
    let planned = with_identity(&["plan", "--out", "saved.plan"]);
    assert_eq!(planned.code, 0, "{planned}");
    let saved = std::fs::read_to_string(ws.path().join("saved.plan")).unwrap();
    assert!(saved.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    let history = with_identity(&["state", "history"]).stdout;

    let shown = with_identity(&["show", "saved.plan"]);
    assert_eq!(shown.code, 0, "{shown}");
    let printed = planned.stdout.split("\nSaved the plan").next().unwrap();
    assert_eq!(shown.stdout, printed);
    let json = with_identity(&["show", "--json", "saved.plan"]);
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(plan["summary"]["create"], 2);
    crate::plan_output::check_schema(&json.stdout);
    assert_eq!(with_identity(&["state", "history"]).stdout, history);

    let locked_out = ws.prov(&["show", "saved.plan"]);
    assert_eq!(locked_out.code, 1, "{locked_out}");
}

#[test]
fn completion_scripts_load_and_the_manual_page_renders() {
    let ws = Workspace::new();
    let prov = crate::harness::prov_bin();
    let bash = Command::new("bash")
        .args([
            "-c",
            &format!("source <({prov} completions bash) && complete -p prov"),
        ])
        .output()
        .unwrap();
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    assert!(String::from_utf8_lossy(&bash.stdout).contains("prov"));
    for shell in ["zsh", "fish"] {
        let script = ws.ok(&["completions", shell]);
        assert!(script.stdout.contains("upload-secrets"), "{shell}");
    }

    let page = ws.ok(&["man"]).stdout;
    let mut man = Command::new("man")
        .args(["-l", "-"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        man.stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
    }
    let rendered = man.wait_with_output().unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("prov - Declarative"), "{text}");
    assert!(text.contains("upload-secrets"), "{text}");
    ws.ok(&["man", "--dir", "man1"]);
    assert!(ws.path().join("man1/prov-exec.1").exists());
}

#[test]
fn state_list_history_and_output_print_json() {
    let ws = Workspace::new();
    ws.write(
        "prov.toml",
        "deployment = \"listed\"\n[hosts.web]\ntarget = \"local\"\ncount = 2\n[outputs]\naddresses = \"web[*].ssh_host\"\n",
    );
    ws.ok(&["apply", "--auto-approve"]);
    let list: serde_json::Value =
        serde_json::from_str(&ws.ok(&["state", "list", "--json"]).stdout).unwrap();
    let addresses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["web[0]", "web[1]"]);
    assert_eq!(list[0]["status"], "ready");
    assert_eq!(list[0]["provider"], "local");
    let history: serde_json::Value =
        serde_json::from_str(&ws.ok(&["state", "history", "--json"]).stdout).unwrap();
    let last = history.as_array().unwrap().last().unwrap();
    assert_eq!(last["serial"], ws.state()["serial"]);
    assert_eq!(last["resources"], 2);
    let outputs: serde_json::Value =
        serde_json::from_str(&ws.ok(&["output", "--json"]).stdout).unwrap();
    assert_eq!(
        outputs["addresses"].as_array().unwrap().len(),
        2,
        "{outputs}"
    );

    // For a shell: variables to eval.
    let env = ws.ok(&["output", "--format", "env"]).stdout;
    let shell = Command::new("sh")
        .arg("-c")
        .arg(format!("{env}printf %s \"$PROV_OUTPUT_ADDRESSES\""))
        .output()
        .unwrap();
    let read: serde_json::Value = serde_json::from_slice(&shell.stdout).unwrap();
    assert_eq!(read, outputs["addresses"], "{env}");

    // For GitHub Actions: appended to $GITHUB_OUTPUT, as `name=value`.
    let github = ws.path().join("github-output");
    std::fs::write(&github, "earlier=1\n").unwrap();
    let path = github.to_str().unwrap();
    let run = crate::secrets::prov_with(
        &ws,
        &["output", "--format", "github"],
        b"",
        &[("GITHUB_OUTPUT", path)],
    );
    assert_eq!(run.code, 0, "{run}");
    let written = std::fs::read_to_string(&github).unwrap();
    assert_eq!(
        written,
        format!("earlier=1\naddresses={}\n", outputs["addresses"])
    );
    let unset = ws.prov(&["output", "--format", "github"]);
    assert_eq!(unset.code, 1, "{unset}");
    assert!(unset.stderr.contains("$GITHUB_OUTPUT"), "{unset}");
}
