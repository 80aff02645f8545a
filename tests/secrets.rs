//! Secrets encrypted with age: interop with Debian's `age` CLI, delivery to
//! local hosts with exact owner, group and mode, change detection by keyed
//! hash, deletion, rekeying, identity errors, no plaintext anywhere it should
//! not be, and state encrypted at rest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{Run, Workspace};

/// A distinctive random plaintext.
fn random_plaintext(label: &str) -> String {
    format!(
        "{label}-{}-{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `age-keygen -o DIR/NAME.txt`; returns (identity path, public key).
pub(crate) fn age_keygen(ws: &Workspace, name: &str) -> (PathBuf, String) {
    let path = ws.path().join(format!("{name}.txt"));
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .trim()
        .to_owned();
    (path, public)
}

/// [`age_keygen`] with the path as text, as `PROV_AGE_IDENTITY` takes it.
pub(crate) fn age_identity(ws: &Workspace, name: &str) -> (String, String) {
    let (path, public) = age_keygen(ws, name);
    (path.to_string_lossy().into_owned(), public)
}

/// `ssh-keygen -t ed25519`; returns (private key path, public key line).
fn ssh_keygen(ws: &Workspace, name: &str) -> (PathBuf, String) {
    let path = ws.path().join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = std::fs::read_to_string(ws.path().join(format!("{name}.pub"))).unwrap();
    (path, public.trim().to_owned())
}

/// Runs prov with `stdin` and extra environment.
pub(crate) fn prov_with(ws: &Workspace, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
    let mut command = ws.command(args);
    command
        .env("HOME", ws.path())
        .env_remove("PROV_AGE_IDENTITY")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    crate::harness::run_from(output, args)
}

/// [`prov_with`], asserting it exits 0.
pub(crate) fn ok_with(ws: &Workspace, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
    let run = prov_with(ws, args, stdin, env);
    assert_eq!(run.code, 0, "prov {args:?} failed:\n{run}");
    run
}

/// `age -d -i IDENTITY FILE`.
fn age_decrypt(identity: &Path, file: &Path) -> Option<String> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

/// `age -r|-R RECIPIENT -o FILE` with `plaintext` on stdin.
fn age_encrypt(flag: &str, recipient: &str, file: &Path, plaintext: &str) {
    let mut child = Command::new("age")
        .args([flag, recipient, "-o"])
        .arg(file)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plaintext.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Runs `command` on a local host over SSH with the workspace's deployer key.
fn ssh(ws: &Workspace, host: &str, command: &str) -> String {
    let address = ws.state()["resources"][host]["attributes"]["ssh_host"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = ws.path().join(".prov/ssh/id_ed25519");
    let out = Command::new("ssh")
        .args(["-i", key.to_str().unwrap()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
        .arg(format!("root@{address}"))
        .arg(command)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every regular file under `dir` (not following symlinks) written since
/// `since` and containing any of `needles`. (Only recent files: a leak of
/// this test's plaintext is newer than the test, and /tmp may hold
/// gigabytes of other runs' build output.)
fn files_containing(
    dir: &Path,
    since: std::time::SystemTime,
    needles: &[&str],
    hits: &mut Vec<PathBuf>,
) {
    let matches = |bytes: &[u8]| {
        needles
            .iter()
            .any(|n| bytes.windows(n.len()).any(|w| w == n.as_bytes()))
    };
    files_matching(dir, since, &matches, &|_| false, hits);
}

/// Every regular file under `dir` (not following symlinks, not looking into
/// what `skip` names) written since `since`, at most 64 MiB, whose bytes
/// `matches`.
pub(crate) fn files_matching(
    dir: &Path,
    since: std::time::SystemTime,
    matches: &dyn Fn(&[u8]) -> bool,
    skip: &dyn Fn(&Path) -> bool,
    hits: &mut Vec<PathBuf>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if skip(&path) {
            continue;
        }
        if kind.is_dir() {
            files_matching(&path, since, matches, skip, hits);
        } else if kind.is_file() {
            let Ok(meta) = entry.metadata() else { continue };
            let recent = meta.modified().is_ok_and(|m| m >= since);
            if !recent || meta.len() > 64 * 1024 * 1024 {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if matches(&bytes) {
                hits.push(path);
            }
        }
    }
}

const HOSTS: &str = r#"
[hosts.db]
target = "local"
nix = { file = "systems.nix", attr = "db" }
tags = { role = "db" }

[hosts.web]
target = "local"
count = 2
nix = { file = "systems.nix", attr = "web" }
tags = { role = "web" }
"#;

fn secret_table(name: &str, hosts: &str, extra: &str, recipients: &[&str]) -> String {
    let list: Vec<String> = recipients.iter().map(|r| format!("{r:?}")).collect();
    format!(
        "\n[secrets.{name}]\nfile = \"secrets/{name}.age\"\nhosts = {hosts}\n{extra}\nrecipients = [{}]\n",
        list.join(", ")
    )
}

#[test]
fn interop_with_the_age_cli_both_directions_for_x25519_and_ssh_ed25519() {
    let ws = Workspace::new();
    let (age_id, age_pub) = age_keygen(&ws, "id");
    let (ssh_id, ssh_pub) = ssh_keygen(&ws, "id_test");
    let mut spec = String::from("deployment = \"interop\"\n[hosts.h]\ntarget = \"local\"\n");
    spec.push_str(&secret_table("x", "[\"h\"]", "", &[&age_pub]));
    spec.push_str(&secret_table("s", "[\"h\"]", "", &[&ssh_pub]));
    ws.write("prov.toml", &spec);
    std::fs::create_dir_all(ws.path().join("secrets")).unwrap();
    let x_file = ws.path().join("secrets/x.age");
    let s_file = ws.path().join("secrets/s.age");
    let age_id_s = age_id.to_str().unwrap();
    let ssh_id_s = ssh_id.to_str().unwrap();

    // age encrypts, prov decrypts.
    let px = random_plaintext("age-to-prov-x25519");
    age_encrypt("-r", &age_pub, &x_file, &px);
    let shown = ok_with(
        &ws,
        &["secrets", "show", "x", "--reveal", "-i", age_id_s],
        b"",
        &[],
    );
    assert_eq!(shown.stdout, px);
    let ps = random_plaintext("age-to-prov-ssh");
    age_encrypt(
        "-R",
        ws.path().join("id_test.pub").to_str().unwrap(),
        &s_file,
        &ps,
    );
    let shown = ok_with(
        &ws,
        &["secrets", "show", "s", "--reveal", "-i", ssh_id_s],
        b"",
        &[],
    );
    assert_eq!(shown.stdout, ps);

    // show refuses without --reveal.
    let refused = prov_with(&ws, &["secrets", "show", "x", "-i", age_id_s], b"", &[]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("--reveal"), "{refused}");
    assert!(!refused.stdout.contains(&px) && !refused.stderr.contains(&px));

    // prov encrypts, age decrypts.
    let px2 = random_plaintext("prov-to-age-x25519");
    ok_with(&ws, &["secrets", "encrypt", "x"], px2.as_bytes(), &[]);
    assert_eq!(age_decrypt(&age_id, &x_file).as_deref(), Some(px2.as_str()));
    let ps2 = random_plaintext("prov-to-age-ssh");
    ok_with(&ws, &["secrets", "encrypt", "s"], ps2.as_bytes(), &[]);
    assert_eq!(age_decrypt(&ssh_id, &s_file).as_deref(), Some(ps2.as_str()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&x_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // list shows names, recipients and hosts, never values.
    let list = ok_with(&ws, &["secrets", "list"], b"", &[]);
    assert!(
        list.stdout.contains("x\n") && list.stdout.contains(&age_pub),
        "{list}"
    );
    assert!(list.stdout.contains("hosts:       h"), "{list}");
    assert!(!list.stdout.contains(&px2) && !list.stdout.contains(&ps2));
}

#[test]
fn apply_delivers_secrets_reuploads_only_changes_deletes_removed_and_leaks_nothing() {
    let started = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
    let ws = Workspace::new();
    ws.copy_example("systems.nix");
    let (id, public) = age_keygen(&ws, "id");
    let id_s = id.to_str().unwrap().to_owned();
    let env = [("PROV_AGE_IDENTITY", id_s.as_str())];
    let alpha = secret_table(
        "alpha",
        r#"["db", "@role=web"]"#,
        "mode = \"0440\"\ngroup = \"root\"",
        &[&public],
    );
    let bravo = secret_table(
        "bravo",
        r#"["web"]"#,
        "destination = \"/run/keys/api/token\"\nupload = \"after\"",
        &[&public],
    );
    let spec = format!("deployment = \"sec\"\n{HOSTS}{alpha}{bravo}");
    ws.write("prov.toml", &spec);
    let a1 = random_plaintext("alpha-one");
    let b1 = random_plaintext("bravo-one");
    let a2 = random_plaintext("alpha-two");
    ok_with(&ws, &["secrets", "encrypt", "alpha"], a1.as_bytes(), &[]);
    ok_with(&ws, &["secrets", "encrypt", "bravo"], b1.as_bytes(), &[]);

    let mut seen = String::new();
    let trace = [("PROV_AGE_IDENTITY", id_s.as_str()), ("PROV_LOG", "trace")];
    let plan = ok_with(&ws, &["plan"], b"", &trace);
    assert!(plan.stdout.contains("secret alpha on db"), "{plan}");
    seen.push_str(&format!("{}{}", plan.stdout, plan.stderr));
    let applied = ok_with(&ws, &["apply", "--auto-approve"], b"", &trace);
    seen.push_str(&format!("{}{}", applied.stdout, applied.stderr));
    assert!(applied.stdout.contains("5 secrets uploaded"), "{applied}");

    for host in ["db", "web[0]", "web[1]"] {
        assert_eq!(
            ssh(
                &ws,
                host,
                "stat -c '%U %G %a' /run/keys/alpha; cat /run/keys/alpha"
            ),
            format!("root root 440\n{a1}")
        );
    }
    for host in ["web[0]", "web[1]"] {
        assert_eq!(
            ssh(
                &ws,
                host,
                "stat -c '%U %G %a' /run/keys/api/token; cat /run/keys/api/token"
            ),
            format!("root root 400\n{b1}")
        );
    }
    assert_eq!(
        ssh(&ws, "db", "test -e /run/keys/api/token || echo absent"),
        "absent\n"
    );
    assert_eq!(
        ssh(&ws, "db", "ls -A /run/keys"),
        "alpha\n",
        "no temp files left"
    );
    let state = ws.state();
    let hmac = state["hosts"]["db"]["secrets"]["alpha"]["hmac"]
        .as_str()
        .unwrap();
    assert_eq!(hmac.len(), 64);
    assert!(state["secret_hmac_key"].as_str().is_some());

    // Nothing changed: nothing to do.
    let plan = prov_with(&ws, &["plan", "--detailed-exitcode"], b"", &env);
    assert_eq!(plan.code, 0, "{plan}");

    // Change alpha only: only alpha travels.
    let before = ssh(&ws, "web[0]", "stat -c '%i %Y' /run/keys/api/token");
    ok_with(&ws, &["secrets", "encrypt", "alpha"], a2.as_bytes(), &[]);
    let plan = ok_with(&ws, &["plan", "--json"], b"", &trace);
    seen.push_str(&format!("{}{}", plan.stdout, plan.stderr));
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::harness::repo().join("docs/plan.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{}", plan.stdout);
    assert_eq!(json["summary"]["secrets"], 3);
    let names: Vec<&str> = json["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "alpha", "alpha"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let applied = ok_with(&ws, &["apply", "--auto-approve"], b"", &trace);
    seen.push_str(&format!("{}{}", applied.stdout, applied.stderr));
    assert!(applied.stdout.contains("alpha"), "{applied}");
    assert!(!applied.stdout.contains("bravo"), "{applied}");
    assert_eq!(ssh(&ws, "web[1]", "cat /run/keys/alpha"), a2);
    assert_eq!(
        ssh(&ws, "web[0]", "stat -c '%i %Y' /run/keys/api/token"),
        before
    );

    // Remove bravo from the spec: it goes from the hosts it was on.
    let spec = format!("deployment = \"sec\"\n{HOSTS}{alpha}");
    ws.write("prov.toml", &spec);
    std::fs::remove_file(ws.path().join("secrets/bravo.age")).unwrap();
    let applied = ok_with(&ws, &["apply", "--auto-approve"], b"", &trace);
    seen.push_str(&format!("{}{}", applied.stdout, applied.stderr));
    assert!(applied.stdout.contains("deleted secret bravo"), "{applied}");
    for host in ["web[0]", "web[1]"] {
        assert_eq!(
            ssh(&ws, host, "test -e /run/keys/api/token || echo gone"),
            "gone\n"
        );
        assert_eq!(ssh(&ws, host, "cat /run/keys/alpha"), a2);
    }
    assert!(ws.state()["hosts"]["web[0]"]["secrets"]["bravo"].is_null());

    // No plaintext in anything prov printed, in state, or in temp directories.
    let pulled = ws.ok(&["state", "pull"]).stdout;
    seen.push_str(&pulled);
    let text = ok_with(&ws, &["plan"], b"", &trace);
    seen.push_str(&format!("{}{}", text.stdout, text.stderr));
    for secret in [&a1, &b1, &a2] {
        assert!(!seen.contains(secret.as_str()), "plaintext {secret} leaked");
    }
    let mut hits = Vec::new();
    let needles = [a1.as_str(), b1.as_str(), a2.as_str()];
    let mut dirs = vec![
        PathBuf::from("/tmp"),
        PathBuf::from("/dev/shm"),
        ws.path().to_owned(),
    ];
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        dirs.push(PathBuf::from(runtime));
    }
    for dir in dirs {
        files_containing(&dir, started, &needles, &mut hits);
    }
    assert!(hits.is_empty(), "plaintext found in {hits:?}");
}

#[test]
fn rekey_adds_and_removes_recipients() {
    let ws = Workspace::new();
    let (a_id, a_pub) = age_keygen(&ws, "a");
    let (b_id, b_pub) = age_keygen(&ws, "b");
    let head = "deployment = \"rekey\"\n[hosts.h]\ntarget = \"local\"\n";
    ws.write(
        "prov.toml",
        &format!("{head}{}", secret_table("k", "[\"h\"]", "", &[&a_pub])),
    );
    let plaintext = random_plaintext("rekey");
    ok_with(&ws, &["secrets", "encrypt", "k"], plaintext.as_bytes(), &[]);
    let file = ws.path().join("secrets/k.age");
    assert_eq!(
        age_decrypt(&a_id, &file).as_deref(),
        Some(plaintext.as_str())
    );
    assert_eq!(age_decrypt(&b_id, &file), None);

    ws.write(
        "prov.toml",
        &format!("{head}{}", secret_table("k", "[\"h\"]", "", &[&b_pub])),
    );
    let rekeyed = ok_with(
        &ws,
        &["secrets", "rekey", "-i", a_id.to_str().unwrap()],
        b"",
        &[],
    );
    assert!(
        rekeyed.stdout.contains(&format!("added {b_pub}")),
        "{rekeyed}"
    );
    assert!(
        rekeyed.stdout.contains(&format!("removed {a_pub}")),
        "{rekeyed}"
    );
    assert!(!rekeyed.stdout.contains(&plaintext));
    assert_eq!(
        age_decrypt(&b_id, &file).as_deref(),
        Some(plaintext.as_str())
    );
    assert_eq!(
        age_decrypt(&a_id, &file),
        None,
        "the removed recipient can no longer decrypt"
    );
}

#[test]
fn a_wrong_or_missing_identity_fails_naming_the_secret_and_uploads_nothing() {
    let ws = Workspace::new();
    ws.copy_example("systems.nix");
    let (id, public) = age_keygen(&ws, "right");
    let (wrong, _) = age_keygen(&ws, "wrong");
    let spec = format!(
        "deployment = \"wrongid\"\n[hosts.db]\ntarget = \"local\"\nnix = {{ file = \"systems.nix\", attr = \"db\" }}\n{}",
        secret_table("token", "[\"db\"]", "", &[&public])
    );
    ws.write("prov.toml", &spec);
    let first = random_plaintext("first");
    ok_with(&ws, &["secrets", "encrypt", "token"], first.as_bytes(), &[]);
    let right = [("PROV_AGE_IDENTITY", id.to_str().unwrap())];
    ok_with(&ws, &["apply", "--auto-approve"], b"", &right);
    assert_eq!(ssh(&ws, "db", "cat /run/keys/token"), first);

    let second = random_plaintext("second");
    ok_with(
        &ws,
        &["secrets", "encrypt", "token"],
        second.as_bytes(),
        &[],
    );
    let serial = ws.state()["serial"].clone();
    for env in [vec![("PROV_AGE_IDENTITY", wrong.to_str().unwrap())], vec![]] {
        let failed = prov_with(&ws, &["apply", "--auto-approve"], b"", &env);
        assert_eq!(failed.code, 1, "{failed}");
        assert!(
            failed.stderr.contains("cannot decrypt secret `token`"),
            "{failed}"
        );
        assert!(failed.stderr.contains(&public), "{failed}");
        assert!(!failed.stderr.contains(&second) && !failed.stdout.contains(&second));
        assert_eq!(
            ssh(&ws, "db", "cat /run/keys/token"),
            first,
            "nothing uploaded"
        );
        assert_eq!(ws.state()["serial"], serial);
    }
}

#[test]
fn encrypted_state_holds_no_plaintext_and_plan_and_apply_still_work() {
    let ws = Workspace::new();
    ws.copy_example("systems.nix");
    let (id, public) = age_keygen(&ws, "state");
    let env = [("PROV_AGE_IDENTITY", id.to_str().unwrap())];
    let spec = format!(
        "deployment = \"encstate\"\n[state]\nencrypt_to = [\"{public}\"]\n[hosts.db]\ntarget = \"local\"\nnix = {{ file = \"systems.nix\", attr = \"db\" }}\n{}",
        secret_table("token", "[\"db\"]", "", &[&public])
    );
    ws.write("prov.toml", &spec);
    let plaintext = random_plaintext("encstate");
    ok_with(
        &ws,
        &["secrets", "encrypt", "token"],
        plaintext.as_bytes(),
        &[],
    );
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);

    let pulled: serde_json::Value =
        serde_json::from_str(&ok_with(&ws, &["state", "pull"], b"", &env).stdout).unwrap();
    let record = &pulled["resources"]["db"];
    let address = record["attributes"]["ssh_host"]
        .as_str()
        .unwrap()
        .to_owned();
    let id_value = record["id"].as_str().unwrap().to_owned();
    let system = pulled["hosts"]["db"]["system"].as_str().unwrap().to_owned();
    let hmac = pulled["hosts"]["db"]["secrets"]["token"]["hmac"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut hits = Vec::new();
    let needles = [
        address.as_str(),
        id_value.as_str(),
        system.as_str(),
        hmac.as_str(),
        plaintext.as_str(),
    ];
    for entry in std::fs::read_dir(ws.path().join(".prov"))
        .unwrap()
        .flatten()
    {
        if entry.file_name() != "ssh" {
            files_containing(&entry.path(), std::time::UNIX_EPOCH, &needles, &mut hits);
        }
    }
    assert!(hits.is_empty(), "plaintext state values in {hits:?}");

    let plan = prov_with(&ws, &["plan", "--detailed-exitcode"], b"", &env);
    assert_eq!(plan.code, 0, "{plan}");
    // Without the identity, state cannot be read, and prov says why.
    let denied = prov_with(&ws, &["plan"], b"", &[]);
    assert_eq!(denied.code, 1, "{denied}");
    assert!(
        denied.stderr.contains("cannot decrypt the state"),
        "{denied}"
    );

    // Plaintext state is refused once encrypt_to is set, until encrypted.
    let plain = Workspace::new();
    plain.write(
        "prov.toml",
        "deployment = \"plain\"\n[hosts.h]\ntarget = \"local\"\n",
    );
    plain.ok(&["apply", "--auto-approve"]);
    let (pid, ppub) = age_keygen(&plain, "state");
    let penv = [("PROV_AGE_IDENTITY", pid.to_str().unwrap())];
    plain.write(
        "prov.toml",
        &format!("deployment = \"plain\"\n[state]\nencrypt_to = [\"{ppub}\"]\n[hosts.h]\ntarget = \"local\"\n"),
    );
    let refused = prov_with(&plain, &["plan"], b"", &penv);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("prov state encrypt"), "{refused}");
    ok_with(&plain, &["state", "encrypt"], b"", &penv);
    let plan = prov_with(&plain, &["plan", "--detailed-exitcode"], b"", &penv);
    assert_eq!(plan.code, 0, "{plan}");
}

#[test]
fn the_example_deploys_its_secrets_to_local_hosts() {
    let ws = Workspace::new();
    ws.copy_example("systems.nix").copy_example("secrets.toml");
    std::fs::create_dir_all(ws.path().join("secrets")).unwrap();
    for name in ["db-password.age", "api-token.age", "demo-identity.txt"] {
        std::fs::copy(
            crate::harness::repo().join("examples/secrets").join(name),
            ws.path().join("secrets").join(name),
        )
        .unwrap();
    }
    let env = [("PROV_AGE_IDENTITY", "secrets/demo-identity.txt")];
    let applied = ok_with(
        &ws,
        &["-f", "secrets.toml", "apply", "--auto-approve"],
        b"",
        &env,
    );
    assert!(applied.stdout.contains("5 secrets uploaded"), "{applied}");
    let address = ws.ok(&["-f", "secrets.toml", "state", "pull"]).stdout;
    let state: serde_json::Value = serde_json::from_str(&address).unwrap();
    let host = state["resources"]["web[1]"]["attributes"]["ssh_host"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = ws.path().join(".prov/ssh/id_ed25519");
    let out = Command::new("ssh")
        .args(["-i", key.to_str().unwrap()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
        .arg(format!("root@{host}"))
        .arg("stat -c '%a' /run/keys/db-password; cat /run/keys/api/token")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "440\ndemo-api-token-not-a-real-secret\n"
    );
}

#[test]
fn invalid_secret_tables_fail_with_locations() {
    let ws = Workspace::new();
    ws.write(
        "prov.toml",
        r#"deployment = "bad"
[hosts.h]
target = "local"

[secrets.k]
file = "missing.age"
hosts = ["nosuchhost"]
mode = "0999"
upload = "sometime"
recipients = ["age1notakey"]
"#,
    );
    let run = ws.prov(&["validate"]);
    assert_eq!(run.code, 1, "{run}");
    for expected in [
        "prov.toml:6:",
        "missing.age does not exist",
        "`nosuchhost` matches no host",
        "mode `0999` is not an octal mode",
        "upload `sometime` is not `before` or `after`",
        "`age1notakey` is not a valid age X25519 recipient",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?}:\n{run}"
        );
    }
}

/// `size` bytes of text unique to `label`, and their SHA-256 as sha256sum
/// prints it.
fn big_plaintext(label: &str, size: usize) -> (Vec<u8>, String) {
    use sha2::Digest;
    let line = format!("{label} {}\n", uuid::Uuid::new_v4().simple());
    let mut data = line.repeat(size / line.len() + 1).into_bytes();
    data.truncate(size);
    let digest = sha2::Sha256::digest(&data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    (data, hex)
}

#[test]
fn a_secret_upload_cut_mid_stream_never_leaves_a_short_file() {
    // deploy-correctness 4: `cat > tmp; mv` installed whatever arrived
    // before the channel dropped.
    let ws = Workspace::new();
    ws.copy_example("systems.nix");
    let (id, public) = age_keygen(&ws, "id");
    let id_s = id.to_str().unwrap().to_owned();
    let env = [("PROV_AGE_IDENTITY", id_s.as_str())];
    let spec = format!(
        "deployment = \"cut\"\n[hosts.vault]\ntarget = \"local\"\nnix = {{ file = \"systems.nix\", attr = \"web\" }}\n{}",
        secret_table("big", r#"["vault"]"#, "", &[&public])
    );
    ws.write("prov.toml", &spec);
    let size = 4 << 20;
    let (v1, v1_hash) = big_plaintext("one", size);
    ok_with(&ws, &["secrets", "encrypt", "big"], &v1, &[]);
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);
    let stored = |ws: &Workspace| {
        ssh(
            ws,
            "vault",
            "sha256sum < /run/keys/big | cut -d' ' -f1; stat -c %s /run/keys/big",
        )
    };
    assert_eq!(stored(&ws), format!("{v1_hash}\n{size}\n"));

    let (v2, v2_hash) = big_plaintext("two", size);
    ok_with(&ws, &["secrets", "encrypt", "big"], &v2, &[]);
    let dir = ws.host_dir("cut", "vault");
    let child = ws
        .command(&["apply", "--auto-approve"])
        .env("HOME", ws.path())
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the upload is running on the host, drop its SSH sessions.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut cut = false;
    while std::time::Instant::now() < deadline && !cut {
        if !crate::deploy::host_processes(&dir, "prov-tmp").is_empty() {
            for pid in crate::deploy::host_processes(&dir, "sshd: root") {
                cut |= Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .unwrap()
                    .success();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(cut, "saw the upload running");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("uploading secret `big` to vault"),
        "{stderr}"
    );
    // The old value, whole: never a short file.
    assert_eq!(stored(&ws), format!("{v1_hash}\n{size}\n"), "{stderr}");

    // The next apply delivers the new value and leaves no temp file.
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);
    assert_eq!(stored(&ws), format!("{v2_hash}\n{size}\n"));
    assert_eq!(
        ssh(&ws, "vault", "ls -A /run/keys"),
        "big\n",
        "no temp file left"
    );
}

#[test]
fn renamed_and_moved_secrets_keep_their_file_and_leave_no_old_one() {
    // deploy-correctness 5: a rename that kept the destination deleted the
    // file right after uploading it; a new destination left the old file.
    let ws = Workspace::new();
    ws.copy_example("systems.nix");
    let (id, public) = age_keygen(&ws, "id");
    let id_s = id.to_str().unwrap().to_owned();
    let env = [("PROV_AGE_IDENTITY", id_s.as_str())];
    let host = "deployment = \"moves\"\n[hosts.box]\ntarget = \"local\"\nnix = { file = \"systems.nix\", attr = \"web\" }\n";
    let table = |name: &str, destination: &str| {
        secret_table(
            name,
            r#"["box"]"#,
            &format!("destination = \"{destination}\""),
            &[&public],
        )
    };
    let value = random_plaintext("token");
    ws.write(
        "prov.toml",
        &format!("{host}{}", table("old", "/run/keys/app/token")),
    );
    ok_with(&ws, &["secrets", "encrypt", "old"], value.as_bytes(), &[]);
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);
    assert_eq!(ssh(&ws, "box", "cat /run/keys/app/token"), value);

    // Renamed, same destination: the file stays (the plan says so).
    ws.write(
        "prov.toml",
        &format!("{host}{}", table("new", "/run/keys/app/token")),
    );
    ok_with(&ws, &["secrets", "encrypt", "new"], value.as_bytes(), &[]);
    let plan = ok_with(&ws, &["plan"], b"", &env);
    assert!(
        plan.stdout.contains("the file stays, written by `new` now"),
        "{plan}"
    );
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);
    assert_eq!(ssh(&ws, "box", "cat /run/keys/app/token"), value);
    let state = ws.state();
    let recorded = state["hosts"]["box"]["secrets"].as_object().unwrap();
    assert_eq!(recorded.keys().collect::<Vec<_>>(), ["new"]);

    // Moved: the new path is written and the old one removed.
    ws.write(
        "prov.toml",
        &format!("{host}{}", table("new", "/run/keys/app/moved")),
    );
    let plan = ok_with(&ws, &["plan"], b"", &env);
    assert!(
        plan.stdout.contains("moved from /run/keys/app/token"),
        "{plan}"
    );
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);
    assert_eq!(ssh(&ws, "box", "cat /run/keys/app/moved"), value);
    assert_eq!(ssh(&ws, "box", "ls -A /run/keys/app"), "moved\n");
    let plan = ok_with(&ws, &["plan", "--detailed-exitcode"], b"", &env);
    assert!(plan.stdout.contains("No changes"), "{plan}");
}

#[test]
fn a_local_hosts_secret_outside_run_keys_stays_inside_the_host() {
    // deploy-correctness 10: only /nix, /run/keys and /root were private to a
    // local host; a secret for /etc/x landed in the deployer's own /etc.
    let ws = Workspace::new();
    ws.copy_example("systems.nix");
    let (id, public) = age_keygen(&ws, "id");
    let id_s = id.to_str().unwrap().to_owned();
    let env = [("PROV_AGE_IDENTITY", id_s.as_str())];
    let name = format!("prov-test-{}", random_plaintext("f").trim());
    let destination = format!("/etc/{name}");
    ws.write(
        "prov.toml",
        &format!(
            "deployment = \"private\"\n[hosts.box]\ntarget = \"local\"\nnix = {{ file = \"systems.nix\", attr = \"web\" }}\n{}",
            secret_table(
                "conf",
                r#"["box"]"#,
                &format!("destination = \"{destination}\""),
                &[&public],
            )
        ),
    );
    let value = random_plaintext("conf");
    ok_with(&ws, &["secrets", "encrypt", "conf"], value.as_bytes(), &[]);
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);
    assert_eq!(ssh(&ws, "box", &format!("cat {destination}")), value);
    assert!(
        !Path::new(&destination).exists(),
        "{destination} was written to the deployer's own /etc"
    );
    let inside = ws
        .host_dir("private", "box")
        .join("layers/etc/upper")
        .join(&name);
    assert!(inside.exists(), "{} is missing", inside.display());
    // The host sees the machine's /etc below its own files.
    assert_eq!(ssh(&ws, "box", "test -e /etc/passwd && echo yes"), "yes\n");
    ok_with(&ws, &["destroy", "--auto-approve"], b"", &env);
    assert!(!Path::new(&destination).exists());
}

#[test]
fn sigint_during_secrets_edit_kills_the_editor_and_removes_the_plaintext() {
    let ws = Workspace::new();
    let (a_id, a_pub) = age_keygen(&ws, "a");
    ws.write(
        "prov.toml",
        &format!(
            "deployment = \"edit-int\"\n[hosts.h]\ntarget = \"local\"\n{}",
            secret_table("k", "[\"h\"]", "", &[&a_pub])
        ),
    );
    let plaintext = random_plaintext("edit-int");
    let since = std::time::SystemTime::now();
    ok_with(&ws, &["secrets", "encrypt", "k"], plaintext.as_bytes(), &[]);
    // The editor says where the scratch file is and its own pid, then waits.
    let marker = ws.path().join("editor-started");
    let editor = ws.path().join("slow-editor");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\necho \"$$ $1\" > {}.tmp && mv {0}.tmp {0}\nexec sleep 30 </dev/null >/dev/null 2>&1\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let runtime = ws.path().join("runtime");
    let tmp = ws.path().join("tmp");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let mut child = ws
        .command(&["secrets", "edit", "k", "-i", a_id.to_str().unwrap()])
        .env("EDITOR", &editor)
        .env_remove("VISUAL")
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = crate::harness::wait_for(std::time::Duration::from_secs(20), || {
        std::fs::read_to_string(&marker).ok()
    });
    let Some(started) = started else {
        let _ = child.kill();
        panic!("the editor never started: {:?}", child.wait_with_output());
    };
    let (editor_pid, scratch) = started.trim().split_once(' ').unwrap();
    let scratch = PathBuf::from(scratch);
    assert!(
        scratch.exists(),
        "the scratch file {scratch:?} exists while editing"
    );
    crate::harness::sigint(child.id());
    let output = crate::harness::wait_exit(child, std::time::Duration::from_secs(10));
    let run = crate::harness::run_from(output, &["secrets", "edit"]);
    assert_eq!(run.code, 130, "Ctrl-C exits 130:\n{run}");
    let editor_alive = Path::new(&format!("/proc/{editor_pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{editor_pid}/stat"))
            .is_ok_and(|s| s.contains(") Z "));
    if editor_alive {
        crate::harness::signal(editor_pid.parse().unwrap(), "KILL");
    }
    let dir = scratch.parent().unwrap();
    assert!(!dir.exists(), "the plaintext directory {dir:?} is gone");
    assert!(!editor_alive, "the editor (pid {editor_pid}) was stopped");
    for base in [Path::new("/dev/shm"), &runtime, &tmp] {
        let mut left = Vec::new();
        files_containing(base, since, &[&plaintext], &mut left);
        assert!(left.is_empty(), "plaintext left in {base:?}: {left:?}");
    }
    assert_eq!(
        age_decrypt(&a_id, &ws.path().join("secrets/k.age")).as_deref(),
        Some(plaintext.as_str()),
        "the secret was left alone"
    );
}

#[test]
fn secrets_of_a_removed_ssh_host_are_deleted_while_it_is_reachable() {
    // deploy-correctness 5: a `target = "ssh"` host removed from the spec
    // kept its secrets on the machine (and in state) forever.
    let landing = Workspace::new();
    landing.write(
        "prov.toml",
        "deployment = \"landing\"\n[hosts.box]\ntarget = \"local\"\n",
    );
    landing.ok(&["apply", "--auto-approve"]);
    let landed = landing.state();
    let attributes = &landed["resources"]["box"]["attributes"];
    let address = attributes["ssh_host"].as_str().unwrap().to_owned();
    let host_key = attributes["host_key"].as_str().unwrap().to_owned();
    let identity = landing.path().join(".prov/ssh/id_ed25519");

    let ws = Workspace::new();
    let (id, public) = age_keygen(&ws, "id");
    let id_s = id.to_str().unwrap().to_owned();
    let env = [("PROV_AGE_IDENTITY", id_s.as_str())];
    let head = format!(
        "deployment = \"existing\"\n[deploy]\nidentity_file = \"{}\"\n",
        identity.display()
    );
    let host = format!(
        "[hosts.old]\ntarget = \"ssh\"\nhost_key = \"{host_key}\"\n[hosts.old.ssh]\naddress = \"{address}\"\n"
    );
    let secret = secret_table(
        "token",
        r#"["old"]"#,
        "destination = \"/run/keys/token\"",
        &[&public],
    );
    ws.write("prov.toml", &format!("{head}{host}{secret}"));
    let value = random_plaintext("token");
    ok_with(&ws, &["secrets", "encrypt", "token"], value.as_bytes(), &[]);
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);
    assert_eq!(ssh(&landing, "box", "cat /run/keys/token"), value);

    // The host leaves the spec (its secret table goes with it).
    ws.write("prov.toml", &head);
    let plan = prov_with(&ws, &["plan", "--detailed-exitcode"], b"", &env);
    assert_eq!(plan.code, 2, "the plan cleans the removed host:\n{plan}");
    assert!(plan.stdout.contains("token"), "{plan}");
    assert!(
        plan.stdout.contains("removed from the spec"),
        "the plan says why:\n{plan}"
    );
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);
    assert_eq!(
        ssh(&landing, "box", "test -e /run/keys/token || echo gone"),
        "gone\n",
        "the secret was deleted from the host"
    );
    let state = ws.state();
    assert!(
        state["hosts"].get("old").is_none(),
        "the removed host's record is gone: {state:#}"
    );
    let plan = prov_with(&ws, &["plan", "--detailed-exitcode"], b"", &env);
    assert_eq!(plan.code, 0, "{plan}");
}

#[test]
fn encrypted_state_read_without_encrypt_to_is_an_error_not_an_empty_state() {
    // state-hardening 1: without `encrypt_to` the envelope read as a state
    // with no resources: `state list` empty, plan creating everything again,
    // destroy destroying nothing.
    let ws = Workspace::new();
    let (id, public) = age_keygen(&ws, "state");
    let env = [("PROV_AGE_IDENTITY", id.to_str().unwrap())];
    let host = "[hosts.db]\ntarget = \"local\"\n";
    ws.write(
        "prov.toml",
        &format!("deployment = \"encgone\"\n[state]\nencrypt_to = [\"{public}\"]\n{host}"),
    );
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);
    let listed = ok_with(&ws, &["state", "list"], b"", &env);
    assert!(listed.stdout.contains("db"), "{listed}");
    // state-hardening 8: the copy beside the database is the encrypted
    // envelope, never the plaintext document.
    let copy = std::fs::read_to_string(ws.path().join(".prov/latest.json")).unwrap();
    assert!(copy.contains("BEGIN AGE ENCRYPTED FILE"), "{copy}");
    assert!(!copy.contains("local-encgone-db"), "{copy}");

    ws.write("prov.toml", &format!("deployment = \"encgone\"\n{host}"));
    for args in [
        &["state", "list"][..],
        &["plan"],
        &["destroy", "--auto-approve"],
        &["apply", "--auto-approve"],
    ] {
        let run = prov_with(&ws, args, b"", &env);
        assert_eq!(run.code, 1, "{run}");
        assert!(
            run.stderr.contains("encrypted state") && run.stderr.contains("encrypt_to"),
            "the error says what to add:\n{run}"
        );
        assert!(!run.stdout.contains("to create"), "{run}");
    }
    // Nothing was destroyed or created: with the setting back, the host is
    // still there and the plan is empty.
    ws.write(
        "prov.toml",
        &format!("deployment = \"encgone\"\n[state]\nencrypt_to = [\"{public}\"]\n{host}"),
    );
    let plan = prov_with(&ws, &["plan", "--detailed-exitcode"], b"", &env);
    assert_eq!(plan.code, 0, "{plan}");
    ok_with(&ws, &["destroy", "--auto-approve"], b"", &env);
}

/// state-hardening 2: a saved plan carried the state in plaintext with its
/// `secret_hmac_key` beside the secrets' HMACs (an offline dictionary attack
/// on the values), and `apply FILE` trusted the `prior` state in it, so an
/// edited pinned host key was pinned. Now the file holds no key and no HMAC,
/// is bound to the state it was made from by a MAC with the state's key, and
/// is encrypted when the state is.
#[test]
fn a_saved_plan_holds_no_key_is_bound_to_its_state_and_is_encrypted_with_it() {
    let ws = Workspace::new();
    ws.copy_example("systems.nix");
    let (id, public) = age_keygen(&ws, "id");
    let id_s = id.to_str().unwrap().to_owned();
    let env = [("PROV_AGE_IDENTITY", id_s.as_str())];
    let host = "deployment = \"planfile\"\n[hosts.box]\ntarget = \"local\"\nnix = { file = \"systems.nix\", attr = \"web\" }\n";
    ws.write(
        "prov.toml",
        &format!(
            "{host}{}",
            secret_table("token", r#"["box"]"#, "", &[&public])
        ),
    );
    let first = random_plaintext("first");
    ok_with(&ws, &["secrets", "encrypt", "token"], first.as_bytes(), &[]);
    ok_with(&ws, &["apply", "--auto-approve"], b"", &env);
    let state = ws.state();
    let key = state["secret_hmac_key"].as_str().unwrap().to_owned();
    let pinned = state["hosts"]["box"]["host_key"]
        .as_str()
        .unwrap()
        .to_owned();

    let second = random_plaintext("second");
    ok_with(
        &ws,
        &["secrets", "encrypt", "token"],
        second.as_bytes(),
        &[],
    );
    ok_with(&ws, &["plan", "--out", "p.plan"], b"", &env);
    let text = std::fs::read_to_string(ws.path().join("p.plan")).unwrap();
    assert!(!text.contains(&key), "the state's key is in the plan file");
    let saved: serde_json::Value = serde_json::from_str(&text).unwrap();
    let uploads = saved["plan"]["secrets"].as_array().unwrap();
    assert_eq!(uploads.len(), 1, "{text}");
    assert!(
        uploads[0].get("hmac").is_none(),
        "an HMAC of the value: {text}"
    );

    // Edited: another host key in `prior`, or another resource id.
    let mut edits = Vec::new();
    let mut forged = saved.clone();
    forged["prior"]["hosts"]["box"]["host_key"] = serde_json::json!(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBztx5z6E+BsKT1rOWLRrTKL3Iz0o+A3cm1fDwXnElVW"
    );
    edits.push(("host key", forged));
    let mut forged = saved.clone();
    forged["prior"]["resources"]["box"]["id"] = serde_json::json!("local-someone-else");
    edits.push(("resource id", forged));
    let mut forged = saved.clone();
    forged["binding"] = serde_json::Value::Null;
    edits.push(("binding removed", forged));
    for (what, forged) in edits {
        ws.write(
            "edited.plan",
            &serde_json::to_string_pretty(&forged).unwrap(),
        );
        let run = prov_with(&ws, &["apply", "edited.plan"], b"", &env);
        assert_eq!(run.code, 1, "{what}: {run}");
        assert!(
            run.stderr.contains("edited") || run.stderr.contains("not bound"),
            "{what}: {run}"
        );
    }
    assert_eq!(
        ws.state()["hosts"]["box"]["host_key"].as_str(),
        Some(pinned.as_str()),
        "nothing of an edited plan was applied"
    );

    // The file as made applies, once.
    ok_with(&ws, &["apply", "p.plan"], b"", &env);
    assert_eq!(ssh(&ws, "box", "cat /run/keys/token"), second);
    let again = prov_with(&ws, &["apply", "p.plan"], b"", &env);
    assert_eq!(again.code, 1, "{again}");
    let plan = prov_with(&ws, &["plan", "--detailed-exitcode"], b"", &env);
    assert_eq!(plan.code, 0, "the recorded HMAC is the value's: {plan}");
    ok_with(&ws, &["destroy", "--auto-approve"], b"", &env);

    // With the state encrypted, so is the plan file.
    let enc = Workspace::new();
    let (eid, epublic) = age_keygen(&enc, "state");
    let eid_s = eid.to_str().unwrap().to_owned();
    let eenv = [("PROV_AGE_IDENTITY", eid_s.as_str())];
    let spec = |count: u32| {
        format!("deployment = \"planenc\"\n[state]\nencrypt_to = [\"{epublic}\"]\n[hosts.h]\ntarget = \"local\"\ncount = {count}\n")
    };
    enc.write("prov.toml", &spec(1));
    ok_with(&enc, &["apply", "--auto-approve"], b"", &eenv);
    enc.write("prov.toml", &spec(2));
    ok_with(&enc, &["plan", "--out", "e.plan"], b"", &eenv);
    let sealed = std::fs::read_to_string(enc.path().join("e.plan")).unwrap();
    assert!(
        sealed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{sealed}"
    );
    assert!(!sealed.contains("local-planenc-h"), "{sealed}");
    let opened = age_decrypt(&eid, &enc.path().join("e.plan")).unwrap();
    assert!(opened.contains("\"prov-plan\""), "{opened}");
    ok_with(&enc, &["apply", "e.plan"], b"", &eenv);
    let listed = ok_with(&enc, &["state", "list"], b"", &eenv);
    assert!(listed.stdout.contains("h[1]"), "{listed}");
    ok_with(&enc, &["destroy", "--auto-approve"], b"", &eenv);
}
