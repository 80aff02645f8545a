//! The VirtualBox provider end to end, against the VBoxManage stand-in in
//! tests/vbox/ (VirtualBox cannot be installed on the machines prov is tested
//! on). The stand-in keeps VMs in a directory and boots each as a namespace
//! container running sshd on its NAT forward port, so the deploy over SSH is
//! real; what VirtualBox itself would do is only as faithful as the stand-in.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{repo, Workspace};

/// A workspace whose prov drives the stand-in, with its own VM directory.
struct VBox {
    ws: Workspace,
    state: PathBuf,
}

impl Drop for VBox {
    fn drop(&mut self) {
        let Ok(vms) = std::fs::read_dir(self.state.join("vms")) else {
            return;
        };
        for vm in vms.flatten() {
            for file in ["pid", "init.pid"] {
                if let Ok(pid) = std::fs::read_to_string(vm.path().join("guest").join(file)) {
                    let _ = Command::new("kill").args(["-9", pid.trim()]).output();
                }
            }
        }
    }
}

/// What one run printed.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn out(output: Output) -> Out {
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn stand_in() -> PathBuf {
    repo().join("tests/vbox/VBoxManage")
}

impl VBox {
    fn new() -> Self {
        let ws = Workspace::new();
        let state = ws.path().join("vbox");
        std::fs::create_dir_all(&state).unwrap();
        ws.write("nixos-base.ova", "stand-in appliance\n");
        Self { ws, state }
    }

    /// `prov ARGS` with the stand-in and extra environment.
    fn prov_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut command = self.ws.command(args);
        command
            .env("PROV_VBOXMANAGE", stand_in())
            .env("PROV_VBOX_STATE", &self.state)
            .envs(env.iter().copied());
        out(command.output().unwrap())
    }

    fn prov(&self, args: &[&str]) -> Out {
        self.prov_env(args, &[])
    }

    fn ok(&self, args: &[&str]) -> Out {
        let run = self.prov(args);
        assert_eq!(run.code, 0, "prov {args:?} failed:\n{run}");
        run
    }

    /// Runs the stand-in directly.
    fn vboxmanage(&self, args: &[&str]) -> Out {
        out(Command::new(stand_in())
            .args(args)
            .env("PROV_VBOX_STATE", &self.state)
            .output()
            .unwrap())
    }

    /// `list vms` as (name, uuid).
    fn vms(&self) -> Vec<(String, String)> {
        let run = self.vboxmanage(&["list", "vms"]);
        assert_eq!(run.code, 0, "{run}");
        run.stdout
            .lines()
            .map(|l| {
                let (name, uuid) = l.rsplit_once(' ').unwrap();
                (
                    name.trim_matches('"').to_owned(),
                    uuid.trim_matches(['{', '}']).to_owned(),
                )
            })
            .collect()
    }

    fn info(&self, vm: &str) -> String {
        let run = self.vboxmanage(&["showvminfo", vm, "--machinereadable"]);
        assert_eq!(run.code, 0, "{run}");
        run.stdout
    }

    /// The VM's /nix as the machine sees it.
    fn guest_nix(&self, uuid: &str) -> PathBuf {
        self.state.join("vms").join(uuid).join("guest/nix")
    }
}

/// What the system profile in `nix` points at.
fn profile(nix: &Path) -> Option<String> {
    let profiles = nix.join("var/nix/profiles");
    let link = std::fs::read_link(profiles.join("system")).ok()?;
    let target = std::fs::read_link(profiles.join(link)).ok()?;
    Some(target.to_string_lossy().into_owned())
}

fn built_web(dir: &Path) -> String {
    crate::harness::nix_build(dir, "systems.nix", "web")
}

/// examples/virtualbox.toml: 2 VMs created and deployed through their
/// forwarded ports, an empty next plan, a memory change applied in place with
/// a restart, destroy leaves no VM.
#[test]
fn virtualbox_example_apply_deploy_update_destroy() {
    let vb = VBox::new();
    vb.ws
        .copy_example("systems.nix")
        .copy_example("virtualbox.toml");
    let spec = ["-f", "virtualbox.toml"];
    let with = |rest: &[&'static str]| -> Vec<&str> { spec.iter().chain(rest).copied().collect() };

    let apply = vb.ok(&with(&["apply", "--auto-approve"]));
    let mut vms = vb.vms();
    vms.sort();
    let names: Vec<&str> = vms.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["prov-vbox-web-0", "prov-vbox-web-1"], "{apply}");

    let system = built_web(vb.ws.path());
    let mut ports = Vec::new();
    for (name, uuid) in &vms {
        let info = vb.info(name);
        assert!(info.contains("VMState=\"running\""), "{info}");
        assert!(info.contains("memory=1024\n"), "{info}");
        let rule = info
            .lines()
            .find(|l| l.starts_with("Forwarding(0)=\"ssh,tcp,127.0.0.1,"))
            .unwrap_or_else(|| panic!("no ssh forward: {info}"));
        ports.push(rule.to_owned());
        assert_eq!(
            profile(&vb.guest_nix(uuid)).as_deref(),
            Some(system.as_str()),
            "{name} has no system profile\n{apply}"
        );
    }
    assert_ne!(ports[0], ports[1]);
    let pulled = vb.ok(&with(&["state", "pull"]));
    let state: serde_json::Value = serde_json::from_str(&pulled.stdout).unwrap();
    assert_eq!(state["resources"]["web[0]"]["provider"], "virtualbox");
    assert_eq!(
        state["resources"]["web[0]"]["attributes"]["ssh_host"],
        "127.0.0.1"
    );

    let plan = vb.prov(&with(&["plan", "--detailed-exitcode"]));
    assert_eq!(plan.code, 0, "the plan after apply is not empty:\n{plan}");

    let text = std::fs::read_to_string(vb.ws.path().join("virtualbox.toml")).unwrap();
    vb.ws.write(
        "virtualbox.toml",
        &text.replace("memory = 1024", "memory = 2048"),
    );
    let plan = vb.prov(&with(&["plan", "--detailed-exitcode"]));
    assert_eq!(plan.code, 2, "{plan}");
    assert!(plan.stdout.contains("~ web[0]"), "{plan}");
    assert!(plan.stdout.contains("memory"), "{plan}");
    assert!(plan.stdout.contains("restarted"), "{plan}");
    assert!(!plan.stdout.contains("forces replacement"), "{plan}");
    let uuids_before: Vec<String> = vms.iter().map(|(_, u)| u.clone()).collect();
    vb.ok(&with(&["apply", "--auto-approve"]));
    let mut after = vb.vms();
    after.sort();
    assert_eq!(
        after.iter().map(|(_, u)| u.clone()).collect::<Vec<_>>(),
        uuids_before,
        "the VMs were replaced, not updated"
    );
    for (name, uuid) in &after {
        let info = vb.info(name);
        assert!(info.contains("memory=2048\n"), "{info}");
        assert!(info.contains("VMState=\"running\""), "{info}");
        assert_eq!(
            profile(&vb.guest_nix(uuid)).as_deref(),
            Some(system.as_str())
        );
    }
    let plan = vb.prov(&with(&["plan", "--detailed-exitcode"]));
    assert_eq!(
        plan.code, 0,
        "the plan after the update is not empty:\n{plan}"
    );

    vb.ok(&with(&["destroy", "--auto-approve"]));
    assert!(vb.vms().is_empty());
    let listed = vb.ok(&with(&["state", "list"]));
    assert!(!listed.stdout.contains("web["), "{listed}");
}

const ONE_VM: &str = r#"deployment = "vboxfail"

[hosts.box]
target = "virtualbox"
base = "nixos-base.ova"
"#;

/// Without VBoxManage the error says what to install.
#[test]
fn virtualbox_missing_vboxmanage_gives_install_hint() {
    let vb = VBox::new();
    vb.ws.write("prov.toml", ONE_VM);
    let mut command = vb.ws.command(&["plan"]);
    command
        .env_remove("PROV_VBOXMANAGE")
        .env("PATH", "/usr/bin:/bin")
        .env("PROV_VBOX_STATE", &vb.state);
    let run = out(command.output().unwrap());
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("VBoxManage is not on PATH"), "{run}");
    assert!(run.stderr.contains("install VirtualBox"), "{run}");
}

/// A failing VBoxManage call: the error quotes its stderr, no VM is left
/// behind, state records no object; the next apply creates it.
#[test]
fn virtualbox_failing_call_quotes_stderr_and_records_nothing() {
    let vb = VBox::new();
    vb.ws.write("prov.toml", ONE_VM);
    for (sub, quoted) in [
        (
            "import",
            "VBoxManage: error: import failed: injected failure",
        ),
        (
            "startvm",
            "VBoxManage: error: startvm failed: injected failure",
        ),
    ] {
        let run = vb.prov_env(&["apply", "--auto-approve"], &[("PROV_VBOX_FAIL", sub)]);
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stderr.contains(quoted), "{sub}: {run}");
        assert!(run.stderr.contains("exit status 1"), "{sub}: {run}");
        assert!(vb.vms().is_empty(), "{sub} left a VM behind");
        let state = vb.ws.state();
        let record = &state["resources"]["box"];
        assert!(record["id"].is_null(), "{sub}: recorded {record}");
        assert_ne!(record["status"], "ready", "{sub}: {record}");
    }
    vb.ok(&["apply", "--auto-approve"]);
    assert_eq!(vb.vms().len(), 1);
    vb.ok(&["destroy", "--auto-approve"]);
    assert!(vb.vms().is_empty());
}

/// deploy-correctness 6: the VM's private host key went on `VBoxManage
/// guestproperty set`'s command line (visible in `ps`), into debug logs and
/// into a guest property that stayed forever. Now it travels in a seed file
/// that is gone once the VM answers with that key.
#[test]
fn virtualbox_private_host_key_never_in_argv_logs_or_properties() {
    let vb = VBox::new();
    vb.ws.write("prov.toml", ONE_VM);
    let apply = vb.prov_env(&["apply", "--auto-approve"], &[("PROV_LOG", "trace")]);
    assert_eq!(apply.code, 0, "{apply}");
    let state: serde_json::Value = serde_json::from_str(&vb.ok(&["state", "pull"]).stdout).unwrap();
    let host_key = state["resources"]["box"]["attributes"]["host_key"]
        .as_str()
        .unwrap()
        .to_owned();

    let marker = "PRIVATE KEY";
    let argv = std::fs::read_to_string(vb.state.join("argv.log")).unwrap();
    assert!(
        argv.contains("startvm"),
        "the stand-in records argv: {argv}"
    );
    assert!(!argv.contains(marker), "a private key was in argv:\n{argv}");
    assert!(
        !apply.stderr.contains(marker) && !apply.stdout.contains(marker),
        "a private key was logged:\n{apply}"
    );
    let properties = vb.vboxmanage(&["guestproperty", "enumerate", "prov-vboxfail-box"]);
    assert_eq!(properties.code, 0, "{properties}");
    assert!(
        !properties.stdout.contains(marker),
        "a private key stays in a guest property:\n{properties}"
    );

    // The seed was attached for the boot, then ejected and deleted.
    let media: Vec<String> = argv
        .lines()
        .filter_map(|l| serde_json::from_str::<Vec<String>>(l).ok())
        .filter(|a| a.first().map(String::as_str) == Some("storageattach"))
        .filter_map(|a| a.last().cloned())
        .collect();
    let seed = media
        .iter()
        .find(|m| m.ends_with(".iso"))
        .unwrap_or_else(|| panic!("no seed was attached: {media:?}"));
    assert_eq!(
        media.last().map(String::as_str),
        Some("emptydrive"),
        "{media:?}"
    );
    assert!(!Path::new(seed).exists(), "the seed {seed} is still there");

    // The VM presents the key prov pinned, and SSH with it works.
    let info = vb.info("prov-vboxfail-box");
    let uuid = info
        .lines()
        .find_map(|l| l.strip_prefix("UUID=\""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let guest_key = std::fs::read_to_string(
        vb.state
            .join("vms")
            .join(&uuid)
            .join("guest/ssh_host_ed25519_key.pub"),
    )
    .ok();
    let presented = guest_key.unwrap_or_else(|| {
        let port = state["resources"]["box"]["attributes"]["ssh_port"].to_string();
        let scan = Command::new("ssh-keyscan")
            .args(["-t", "ed25519", "-p", &port, "127.0.0.1"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&scan.stdout).into_owned()
    });
    assert!(
        presented.contains(host_key.split_whitespace().nth(1).unwrap()),
        "the VM presents {presented}, prov pinned {host_key}"
    );
    vb.ok(&["destroy", "--auto-approve"]);
}
