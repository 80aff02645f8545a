//! The libvirt provider end to end on a real libvirtd with QEMU (TCG),
//! booting the Debian test image scripts/libvirt-image.sh builds (sshd,
//! nix-bin, cloud-init). scripts/test.sh starts the daemons and exports
//! PROV_LIBVIRT_IMAGE, PROV_LIBVIRT_KERNEL, PROV_LIBVIRT_INITRD and
//! PROV_LIBVIRT_POOL; without them these tests fail and say how to set up.

use std::path::Path;
use std::process::Command;

use crate::harness::{Run, Workspace};

const URI: &str = "qemu:///system";

/// The machine's libvirt setup, from the environment test.sh exports.
struct Setup {
    pool: String,
    env: Vec<(&'static str, String)>,
}

fn setup() -> Setup {
    let mut env = Vec::new();
    for name in [
        "PROV_LIBVIRT_IMAGE",
        "PROV_LIBVIRT_KERNEL",
        "PROV_LIBVIRT_INITRD",
    ] {
        let value = std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run `scripts/libvirt-setup.sh` and `eval \"$(scripts/libvirt-image.sh)\"` first (scripts/test.sh does both)")
        });
        assert!(Path::new(&value).is_file(), "{name}={value} is not a file");
        env.push((name, value));
    }
    let pool = std::env::var("PROV_LIBVIRT_POOL").unwrap_or_else(|_| "prov-test".into());
    env.push(("PROV_LIBVIRT_POOL", pool.clone()));
    env.push(("PROV_LIBVIRT_URI", URI.into()));
    Setup { pool, env }
}

fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Domains whose name starts with `prefix`.
fn domains(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = virsh(&["list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Volumes of `pool` whose name starts with `prefix`.
fn volumes(pool: &str, prefix: &str) -> Vec<String> {
    // Best effort, as in prov: libvirt refuses a refresh while another
    // client (a test running beside this one) uploads into the pool, and the
    // listing is still right for every volume this test made.
    let _ = Command::new("virsh")
        .args(["-c", URI, "pool-refresh", pool])
        .output();
    let mut names: Vec<String> = virsh(&["vol-list", pool])
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// A workspace for one deployment; whatever a failing test left behind in
/// libvirt is removed when it is dropped.
struct Lab {
    ws: Workspace,
    setup: Setup,
    prefix: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.clean();
    }
}

impl Lab {
    /// Removes this deployment's domains and volumes (left by a test that
    /// was killed before its own clean-up ran).
    fn clean(&self) {
        for domain in domains(&self.prefix) {
            let _ = Command::new("virsh")
                .args(["-c", URI, "destroy", &domain])
                .output();
            let _ = Command::new("virsh")
                .args(["-c", URI, "undefine", &domain, "--nvram"])
                .output();
        }
        for volume in volumes(&self.setup.pool, &self.prefix) {
            let _ = Command::new("virsh")
                .args(["-c", URI, "vol-delete", "--pool", &self.setup.pool, &volume])
                .output();
        }
    }

    /// examples/libvirt.toml with deployment `deployment`.
    fn new(deployment: &str) -> Self {
        let ws = Workspace::new();
        ws.copy_example("systems.nix").copy_example("libvirt.toml");
        let text = std::fs::read_to_string(ws.path().join("libvirt.toml")).unwrap();
        ws.write(
            "libvirt.toml",
            &text.replace(
                "deployment = \"lv\"",
                &format!("deployment = \"{deployment}\""),
            ),
        );
        let lab = Self {
            ws,
            setup: setup(),
            prefix: format!("prov-{deployment}-"),
        };
        lab.clean();
        lab
    }

    fn prov_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec!["-f", "libvirt.toml"];
        all.extend_from_slice(args);
        let mut command = self.ws.command(&all);
        command.envs(self.setup.env.iter().map(|(k, v)| (*k, v.as_str())));
        command.envs(env.iter().copied());
        crate::harness::run_from(command.output().unwrap(), &all)
    }

    fn ok(&self, args: &[&str]) -> Run {
        let run = self.prov_env(args, &[]);
        assert_eq!(run.code, 0, "prov {args:?} failed:\n{run}");
        run
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", "pull"]).stdout).unwrap()
    }

    /// Runs `command` on VM `address` with plain OpenSSH, trusting only the
    /// host key prov recorded (so this also proves the VM presents the key
    /// prov handed it in the seed).
    fn ssh(&self, state: &serde_json::Value, address: &str, command: &str) -> String {
        let attributes = &state["resources"][address]["attributes"];
        let port = attributes["ssh_port"].as_u64().unwrap().to_string();
        let key = attributes["host_key"].as_str().unwrap();
        let known = self.ws.path().join(format!("known_hosts-{address}"));
        std::fs::write(&known, format!("[127.0.0.1]:{port} {key}\n")).unwrap();
        let identity = self.ws.path().join(".prov/ssh/id_ed25519");
        let out = Command::new("ssh")
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=20",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .arg("-i")
            .arg(&identity)
            .args(["-p", &port, "root@127.0.0.1", command])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh to {address}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn built_web(dir: &Path) -> String {
    crate::harness::nix_build(dir, "systems.nix", "web")
}

/// examples/libvirt.toml on qemu:///system: 2 VMs boot, prov reaches them
/// with the host key it generated, copies and activates the stand-in system;
/// the next plan is empty; a memory change is planned and applied in place;
/// another deployer key is given to the VMs in place (same domains, the
/// pinned host keys hold); a VM powered off outside prov is drift that apply
/// puts right; destroy
/// leaves no domain and no volume but the base image.
#[test]
fn libvirt_example_apply_deploy_update_destroy() {
    let lab = Lab::new("lv");
    let started = std::time::Instant::now();
    let apply = lab.ok(&["apply", "--auto-approve"]);
    eprintln!("apply of 2 VMs: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(
        domains(&lab.prefix),
        ["prov-lv-web-0", "prov-lv-web-1"],
        "{apply}"
    );
    let running = virsh(&["list", "--name"]);
    assert!(
        running.contains("prov-lv-web-0") && running.contains("prov-lv-web-1"),
        "{running}"
    );
    assert_eq!(
        volumes(&lab.setup.pool, &lab.prefix),
        [
            "prov-lv-web-0-seed.iso",
            "prov-lv-web-0.qcow2",
            "prov-lv-web-1-seed.iso",
            "prov-lv-web-1.qcow2"
        ]
    );

    let system = built_web(lab.ws.path());
    let state = lab.state();
    let mut uuids = Vec::new();
    for (address, hostname) in [("web[0]", "web-0"), ("web[1]", "web-1")] {
        let attributes = &state["resources"][address]["attributes"];
        assert_eq!(attributes["ssh_host"], "127.0.0.1");
        assert_eq!(attributes["state"], "running");
        assert_eq!(
            state["hosts"][address]["host_key"], attributes["host_key"],
            "the key prov pinned is the one it generated"
        );
        uuids.push(attributes["uuid"].as_str().unwrap().to_owned());
        let profile = lab.ssh(
            &state,
            address,
            "readlink -f /nix/var/nix/profiles/system; hostname",
        );
        assert_eq!(profile, format!("{system}\n{hostname}"), "{apply}");
    }

    let plan = lab.prov_env(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(plan.code, 0, "the plan after apply is not empty:\n{plan}");

    let text = std::fs::read_to_string(lab.ws.path().join("libvirt.toml")).unwrap();
    lab.ws.write(
        "libvirt.toml",
        &text.replace("memory = 1024", "memory = 1536"),
    );
    let plan = lab.prov_env(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(plan.code, 2, "{plan}");
    insta::assert_snapshot!("libvirt_memory_change_plan", plan.stdout);
    assert!(plan.stdout.contains("memory"), "{plan}");
    assert!(
        plan.stdout.contains("shut down"),
        "the plan says the VM restarts:\n{plan}"
    );
    assert!(
        plan.stdout
            .contains("Plan: 0 to create, 2 to update, 0 to replace, 0 to destroy."),
        "{plan}"
    );
    let started = std::time::Instant::now();
    let update = lab.ok(&["apply", "--auto-approve"]);
    eprintln!(
        "memory change on 2 VMs: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (i, name) in ["prov-lv-web-0", "prov-lv-web-1"].iter().enumerate() {
        let info = virsh(&["dominfo", name]);
        assert!(info.contains("1572864 KiB"), "{name}: {info}\n{update}");
        assert!(info.contains(&uuids[i]), "{name} was replaced: {info}");
    }
    let state = lab.state();
    assert!(lab
        .ssh(&state, "web[1]", "readlink -f /nix/var/nix/profiles/system")
        .contains(&system));
    let plan = lab.prov_env(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(
        plan.code, 0,
        "the plan after the update is not empty:\n{plan}"
    );

    // Another deployer (a teammate's checkout, CI) comes with its own key.
    // The VMs are kept: the key reaches them in place, at a restart.
    let old_keys = lab.ws.path().join(".prov/ssh-first");
    std::fs::rename(lab.ws.path().join(".prov/ssh"), &old_keys).unwrap();
    let plan = lab.prov_env(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(
        plan.stdout
            .contains("Plan: 0 to create, 2 to update, 0 to replace, 0 to destroy."),
        "another deployer key must not replace the VMs:\n{plan}"
    );
    assert!(plan.stdout.contains("authorized_keys"), "{plan}");
    assert!(plan.stdout.contains("new cloud-init seed"), "{plan}");
    let started = std::time::Instant::now();
    let rekeyed = lab.ok(&["apply", "--auto-approve"]);
    eprintln!(
        "new deployer key on 2 VMs: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (i, name) in ["prov-lv-web-0", "prov-lv-web-1"].iter().enumerate() {
        let info = virsh(&["dominfo", name]);
        assert!(
            info.contains(&uuids[i]),
            "{name} was replaced: {info}\n{rekeyed}"
        );
    }
    let state = lab.state();
    for address in ["web[0]", "web[1]"] {
        // Logs in with the new key, and the host key pinned at create holds.
        assert!(lab
            .ssh(&state, address, "readlink -f /nix/var/nix/profiles/system")
            .contains(&system));
    }
    let plan = lab.prov_env(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(
        plan.code, 0,
        "the plan after the new key is not empty:\n{plan}"
    );

    // A VM powered off behind prov's back is drift, and apply starts it.
    virsh(&["destroy", "prov-lv-web-1"]);
    let plan = lab.prov_env(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(plan.stdout.contains("changed outside prov"), "{plan}");
    assert!(plan.stdout.contains("the VM is started"), "{plan}");
    lab.ok(&["apply", "--auto-approve"]);
    assert!(virsh(&["list", "--name"]).contains("prov-lv-web-1"));
    let state = lab.state();
    assert!(lab
        .ssh(&state, "web[1]", "readlink -f /nix/var/nix/profiles/system")
        .contains(&system));
    let plan = lab.prov_env(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(
        plan.code, 0,
        "the plan after the restart is not empty:\n{plan}"
    );

    let base_volumes = volumes(&lab.setup.pool, "");
    let started = std::time::Instant::now();
    lab.ok(&["destroy", "--auto-approve"]);
    eprintln!("destroy of 2 VMs: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(domains(&lab.prefix), Vec::<String>::new());
    assert_eq!(volumes(&lab.setup.pool, &lab.prefix), Vec::<String>::new());
    // The base image stays for the next deployment.
    let left = volumes(&lab.setup.pool, "");
    assert!(!left.is_empty());
    assert!(left.iter().all(|v| base_volumes.contains(v)), "{left:?}");
}

/// An environment override and what prov must say about it.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

/// What the machine lacks is named with a fix, and nothing is left behind:
/// no libvirtd at the URI, a missing pool, a missing base image (file and
/// volume).
#[test]
fn libvirt_missing_daemon_pool_or_image_is_a_clear_error() {
    let lab = Lab::new("lverr");
    let cases: [Case; 4] = [
        (
            &[(
                "PROV_LIBVIRT_URI",
                "qemu:///system?socket=/nonexistent/libvirt-sock",
            )],
            &[
                "cannot connect to libvirt at qemu:///system",
                "is libvirtd running?",
                "libvirtd -d",
            ],
        ),
        (
            &[("PROV_LIBVIRT_POOL", "prov-no-such-pool")],
            &[
                "storage pool `prov-no-such-pool` does not exist",
                "pool-define-as prov-no-such-pool dir",
            ],
        ),
        (
            &[("PROV_LIBVIRT_IMAGE", "/nonexistent/debian.qcow2")],
            &[
                "base image /nonexistent/debian.qcow2 cannot be read",
                "scripts/libvirt-image.sh",
            ],
        ),
        (
            &[("PROV_LIBVIRT_IMAGE", "no-such-volume.qcow2")],
            &[
                "base image volume `no-such-volume.qcow2` is not in pool",
                "vol-upload",
            ],
        ),
    ];
    for (env, expected) in cases {
        let run = lab.prov_env(&["apply", "--auto-approve"], env);
        assert_eq!(run.code, 1, "{env:?}:\n{run}");
        for text in expected {
            assert!(run.stderr.contains(text), "{env:?}: no `{text}` in\n{run}");
        }
        assert!(!run.stderr.contains("panicked"), "{run}");
        assert_eq!(domains(&lab.prefix), Vec::<String>::new(), "{env:?}");
        assert_eq!(
            volumes(&lab.setup.pool, &lab.prefix),
            Vec::<String>::new(),
            "{env:?}"
        );
    }
    // Nothing was recorded as created either.
    let state = lab.state();
    let resources = state["resources"]
        .as_object()
        .map_or(0, |r| r.values().filter(|r| r["id"].is_string()).count());
    assert_eq!(resources, 0, "{state:#}");
}

/// `prov apply` killed (SIGKILL) while its VM boots: the next apply finds
/// the domain by its idempotency token, sees its create never finished,
/// removes it and makes it again. One domain, two volumes, reachable with
/// the recorded host key, and an empty plan afterwards.
#[test]
fn libvirt_apply_killed_while_the_vm_boots_is_finished_by_the_next_apply() {
    let lab = Lab::new("lvcrash");
    let text = std::fs::read_to_string(lab.ws.path().join("libvirt.toml")).unwrap();
    let single = text
        .replace("count = 2\n", "")
        .replace("web[*].ssh_port", "web.ssh_port");
    lab.ws.write("libvirt.toml", &single);
    let log = lab.ws.path().join("killed-apply.log");
    let mut command = lab
        .ws
        .command(&["-f", "libvirt.toml", "apply", "--auto-approve"]);
    command
        .envs(lab.setup.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = command.spawn().unwrap();
    // Wait (bounded) for the domain to run, then kill prov mid-boot.
    let started = std::time::Instant::now();
    loop {
        if virsh(&["list", "--name"]).contains("prov-lvcrash-web") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(180),
            "the domain never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "prov exited before the VM started"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(domains(&lab.prefix), ["prov-lvcrash-web"]);
    let state = lab.state();
    assert_eq!(state["resources"]["web"]["status"], "creating", "{state:#}");

    let rerun = lab.ok(&["apply", "--auto-approve"]);
    assert_eq!(domains(&lab.prefix), ["prov-lvcrash-web"], "{rerun}");
    assert_eq!(
        volumes(&lab.setup.pool, &lab.prefix),
        ["prov-lvcrash-web-seed.iso", "prov-lvcrash-web.qcow2"]
    );
    let state = lab.state();
    assert_eq!(state["resources"]["web"]["status"], "ready", "{state:#}");
    assert_eq!(lab.ssh(&state, "web", "hostname"), "web");
    let plan = lab.prov_env(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(plan.code, 0, "{plan}");
    lab.ok(&["destroy", "--auto-approve"]);
    assert_eq!(domains(&lab.prefix), Vec::<String>::new());
}

/// Two applies at once (parallel CI jobs) on a base image that is not in
/// the pool yet: one found the other's upload half done, took it for an
/// interrupted one and deleted it, and a VM on it then failed with
/// "inaccessible backing store" (seen in fresh-machine run 7). Uploads of
/// one base are now one at a time; both applies succeed, one upload.
#[test]
fn libvirt_two_applies_at_once_share_a_new_base_image() {
    let a = Lab::new("lvpa");
    let b = Lab::new("lvpb");
    let image = a
        .setup
        .env
        .iter()
        .find(|(k, _)| *k == "PROV_LIBVIRT_IMAGE")
        .map(|(_, v)| v.clone())
        .unwrap();
    // A copy at a new path is a base neither the pool nor any run has seen.
    let copy = a.ws.path().join("fresh-base.qcow2");
    let status = Command::new("cp")
        .args(["--reflink=auto"])
        .arg(&image)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    for lab in [&a, &b] {
        let text = std::fs::read_to_string(lab.ws.path().join("libvirt.toml")).unwrap();
        let text = text.replace("count = 2", "count = 1");
        let text = text
            .lines()
            // No system to deploy: the upload is what is tested, and two
            // more activations under TCG beside the other tests only add
            // confirmation timeouts.
            .filter(|l| !l.starts_with("nix = "))
            .map(|l| {
                if l.starts_with("base = ") {
                    format!("base = \"{}\"", copy.display())
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        lab.ws.write("libvirt.toml", &text);
    }
    let spawn = |lab: &Lab| {
        let mut command = lab
            .ws
            .command(&["-f", "libvirt.toml", "apply", "--auto-approve"]);
        command.envs(lab.setup.env.iter().map(|(k, v)| (*k, v.as_str())));
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The second starts the moment the first's upload has begun (its
    // volume is in the pool but not complete): the window of the race.
    let first = spawn(&a);
    let seen = crate::harness::wait_for(std::time::Duration::from_secs(120), || {
        (!volumes(&a.setup.pool, "fresh-base-").is_empty()).then_some(())
    });
    assert!(seen.is_some(), "the first apply never started uploading");
    let second = spawn(&b);
    let limit = std::time::Duration::from_secs(600);
    let runs = [
        crate::harness::run_from(crate::harness::wait_exit(first, limit), &["apply (a)"]),
        crate::harness::run_from(crate::harness::wait_exit(second, limit), &["apply (b)"]),
    ];
    let uploaded: Vec<String> = volumes(&a.setup.pool, "fresh-base-");
    for lab in [&a, &b] {
        let _ = lab.prov_env(&["destroy", "--auto-approve"], &[]);
    }
    for volume in &uploaded {
        let _ = Command::new("virsh")
            .args(["-c", URI, "vol-delete", "--pool", &a.setup.pool, volume])
            .output();
    }
    for run in &runs {
        assert_eq!(run.code, 0, "{run}");
    }
    assert_eq!(
        uploaded.len(),
        1,
        "one upload of the new base: {uploaded:?}"
    );
}
