//! Commands on deployed hosts: `prov exec` and `prov ssh` against local
//! namespace hosts (their pinned keys, a key that changed), and secrets put
//! back with `prov upload-secrets` after a host lost them.

use crate::harness::Workspace;

/// Two web hosts and a db host, local, no system (exec and ssh need none).
const SPEC: &str = r#"deployment = "remote"

[hosts.web]
target = "local"
count = 2
tags = { role = "web" }

[hosts.db]
target = "local"
"#;

fn applied(spec: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write("prov.toml", spec);
    ws.ok(&["apply", "--auto-approve"]);
    ws
}

#[test]
fn exec_prefixes_each_hosts_output_and_names_the_hosts_that_failed() {
    let ws = applied(SPEC);
    let run = ws.ok(&["exec", "--on", "@role=web", "--", "hostname"]);
    let mut lines: Vec<&str> = run.stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["web[0] | web-0", "web[1] | web-1"], "{run}");

    let failing = ws.prov(&["exec", "--", "test \"$(hostname)\" != web-1 && echo fine"]);
    assert_eq!(failing.code, 1, "{failing}");
    assert!(
        failing
            .stderr
            .contains("the command failed on 1 of 3 host(s): web[1] (exit 1)"),
        "{failing}"
    );
    assert!(failing.stdout.contains("db     | fine"), "{failing}");

    let json = ws.prov(&[
        "exec",
        "--json",
        "--",
        "hostname; echo oops >&2; exit $(( $(hostname | tr -dc 0-9) + 0 ))",
    ]);
    assert_eq!(json.code, 1, "{json}");
    let outcomes: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let summary: Vec<(String, i64, String, String)> = outcomes
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["host"].as_str().unwrap().to_owned(),
                o["exit_code"].as_i64().unwrap(),
                o["stdout"].as_str().unwrap().to_owned(),
                o["stderr"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = |host: &str, code: i64, name: &str| {
        (
            host.to_owned(),
            code,
            format!("{name}\n"),
            "oops\n".to_owned(),
        )
    };
    assert_eq!(
        summary,
        [
            expected("db", 0, "db"),
            expected("web[0]", 0, "web-0"),
            expected("web[1]", 1, "web-1")
        ]
    );
    let typo = ws.prov(&["exec", "--on", "@role=wbe", "--", "true"]);
    assert_eq!(typo.code, 1, "{typo}");
    assert!(typo.stderr.contains("matches no host"), "{typo}");
}

#[test]
fn ssh_runs_a_command_with_the_pinned_key_and_refuses_a_changed_one() {
    let ws = applied(SPEC);
    ws.ok(&["exec", "--", "hostname > /etc/hostname"]);
    let run = ws.ok(&["ssh", "web-0", "--", "cat", "/etc/hostname"]);
    assert_eq!(run.stdout, "web-0\n", "{run}");
    let by_address = ws.ok(&["ssh", "web[1]", "--", "cat /etc/hostname"]);
    assert_eq!(by_address.stdout, "web-1\n", "{by_address}");
    // The remote status is prov's, and stdin (not a terminal) goes through.
    let status = ws.prov(&["ssh", "db", "--", "exit 7"]);
    assert_eq!(status.code, 7, "{status}");
    let mut piped = ws.command(&["ssh", "db"]);
    piped.stdin(std::process::Stdio::piped());
    piped.stdout(std::process::Stdio::piped());
    let mut child = piped.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"echo from a script on $(hostname)\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from a script on db\n"
    );

    crate::deploy::swap_host_key(&ws.host_dir("remote", "web-0"));
    let refused = ws.prov(&["ssh", "web-0", "--", "true"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("host key"), "{refused}");
    let exec = ws.prov(&["exec", "--on", "web", "--", "true"]);
    assert_eq!(exec.code, 1, "{exec}");
    assert!(
        exec.stderr.contains("web[0] (connecting to web[0]"),
        "{exec}"
    );
    let accept = ws.prov(&["--accept-new-host-keys", "ssh", "web-0", "--", "true"]);
    assert_eq!(accept.code, 1, "{accept}");
    assert!(accept.stderr.contains("record none"), "{accept}");
}

#[test]
fn a_secret_gone_from_the_host_is_planned_and_upload_secrets_puts_it_back() {
    let ws = Workspace::new();
    let (identity, public) = crate::secrets::age_identity(&ws, "id");
    ws.write(
        "prov.toml",
        &format!(
            "{SPEC}\n[secrets.token]\nfile = \"token.age\"\nhosts = [\"web\"]\nrecipients = [\"{public}\"]\n"
        ),
    );
    let env = [("PROV_AGE_IDENTITY", identity.as_str())];
    let prov = |args: &[&str]| crate::secrets::prov_with(&ws, args, b"", &env);
    let encrypted =
        crate::secrets::prov_with(&ws, &["secrets", "encrypt", "token"], b"s3cret", &env);
    assert_eq!(encrypted.code, 0, "{encrypted}");
    let applied = prov(&["apply", "--auto-approve"]);
    assert_eq!(applied.code, 0, "{applied}");
    let cat = |host: &str| {
        prov(&[
            "ssh",
            host,
            "--",
            "cat /run/keys/token 2>/dev/null || echo none",
        ])
        .stdout
    };
    assert_eq!(cat("web-0"), "s3cret");
    let clean = prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(clean.code, 0, "{clean}");

    // A reboot empties /run/keys: the plan notices, and says why.
    prov(&["ssh", "web-1", "--", "rm -f /run/keys/*"]);
    assert_eq!(cat("web-1"), "none\n");
    let plan = prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(
        plan.stdout.contains(
            "# secret token on web[1] will be uploaded (missing on the host, before activation)"
        ),
        "{plan}"
    );
    assert!(!plan.stdout.contains("on web[0]"), "{plan}");

    let uploaded = prov(&["upload-secrets", "--on", "web[1]"]);
    assert_eq!(uploaded.code, 0, "{uploaded}");
    assert!(
        uploaded.stdout.contains("1 secret uploaded to 1 host."),
        "{uploaded}"
    );
    assert_eq!(cat("web-1"), "s3cret");
    let again = prov(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again}");

    // Without --on, every host's secrets are written again.
    let all = prov(&["upload-secrets"]);
    assert!(
        all.stdout.contains("2 secrets uploaded to 2 hosts."),
        "{all}"
    );
}
