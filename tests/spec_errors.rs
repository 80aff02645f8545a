//! Malformed specs: each one exits 1 with FILE:LINE:COL and a snippet, never
//! panics, and leaves state untouched (no state directory is created).

use crate::harness::Workspace;

const HEAD: &str = "deployment = \"bad\"\n[providers.ec2]\nregion = \"us-east-1\"\n";

/// (name, spec, expected "LINE:COL", words the message must contain)
fn cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let host = |extra: &str| {
        format!("{HEAD}[hosts.web]\ntarget = \"ec2\"\nami = \"ami-1\"\ninstance_type = \"t3.micro\"\n{extra}")
    };
    vec![
        ("bad toml", format!("{HEAD}[hosts.web\n"), "4:11", ""),
        ("unknown top-level key", format!("{HEAD}colour = \"red\"\n"), "4:1", "colour"),
        ("unknown host key", host("flavour = \"x\"\n"), "8:1", "flavour"),
        ("wrong type", host("count = \"3\"\n"), "8:9", ""),
        ("negative count", host("count = -1\n"), "8:9", "count"),
        ("count over the limit", host("count = 5000\n"), "8:9", "count"),
        ("dangling key pair", host("key_pair = \"nope\"\n"), "8:12", "nope"),
        ("dangling security group", host("security_groups = [\"nope\"]\n"), "8:20", "nope"),
        ("dangling depends_on", host("depends_on = [\"db\"]\n"), "8:15", "db"),
        (
            "cycle",
            format!(
                "{}[hosts.db]\ntarget = \"ec2\"\nami = \"a\"\ninstance_type = \"t\"\ndepends_on = [\"web\"]\n",
                host("depends_on = [\"db\"]\n")
            ),
            "",
            "cycle",
        ),
        (
            "duplicate name across kinds",
            format!("{}[key_pairs.web]\npublic_key = \"ssh-ed25519 AAAA x\"\n", host("")),
            "",
            "web",
        ),
        ("duplicate toml key", host("ami = \"ami-2\"\n"), "8:1", ""),
        ("unsupported target", host("").replace("target = \"ec2\"", "target = \"gcp\""), "5:10", "gcp"),
        ("reserved tag", host("tags = { \"prov:x\" = \"y\" }\n"), "", "prov:"),
        (
            "bad port range",
            format!("{HEAD}[security_groups.sg]\n[[security_groups.sg.ingress]]\nprotocol = \"tcp\"\nfrom_port = 90\nto_port = 80\ncidr_blocks = [\"0.0.0.0/0\"]\n"),
            "",
            "port",
        ),
        (
            "bad cidr",
            format!("{HEAD}[security_groups.sg]\n[[security_groups.sg.ingress]]\nprotocol = \"tcp\"\nfrom_port = 80\nto_port = 80\ncidr_blocks = [\"10.0.0.0/33\"]\n"),
            "",
            "10.0.0.0/33",
        ),
        (
            "a host named like a counted host's machine",
            "deployment = \"x\"\n[hosts.web]\ntarget = \"local\"\ncount = 2\n[hosts.web-1]\ntarget = \"local\"\n".to_owned(),
            "5:8",
            "machine name of `web[1]`",
        ),
        ("missing deployment", "[providers.ec2]\nregion = \"x\"\n".to_owned(), "", "deployment"),
        (
            "missing provider settings",
            "deployment = \"x\"\n[hosts.web]\ntarget = \"ec2\"\nami = \"a\"\ninstance_type = \"t\"\n".to_owned(),
            "",
            "providers.ec2",
        ),
        ("output to nothing", format!("{}[outputs]\nx = \"db.id\"\n", host("")), "", "db"),
        (
            "unknown goal",
            "deployment = \"x\"\n[hosts.h]\ntarget = \"ssh\"\nsystem = \"/nix/store/aaa-x\"\ngoal = \"reboot\"\n[hosts.h.ssh]\naddress = \"127.0.0.1\"\n".to_owned(),
            "5:8",
            "reboot",
        ),
        (
            "ssh host without address",
            "deployment = \"x\"\n[hosts.h]\ntarget = \"ssh\"\n".to_owned(),
            "3:10",
            "no address",
        ),
        (
            "ec2 key on a local host",
            "deployment = \"x\"\n[hosts.h]\ntarget = \"local\"\nami = \"ami-1\"\n".to_owned(),
            "4:7",
            "ec2",
        ),
        (
            // deploy-correctness 9: a window prov cannot confirm in.
            "confirm_timeout too short to confirm",
            "deployment = \"x\"\n[hosts.h]\ntarget = \"local\"\nsystem = \"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x\"\nconfirm_timeout = 1\n".to_owned(),
            "5:19",
            "confirm_timeout",
        ),
        (
            // deploy-correctness 11: non-ASCII in a recipient panicked.
            "non-ASCII recipient",
            "deployment = \"x\"\n[secrets.s]\nrecipients = [\"ssh-ed25519 \u{20ac}\u{20ac}\u{20ac}\u{20ac}\u{20ac}\u{20ac}\u{20ac}a\"]\nfile = \"prov.toml\"\nhosts = []\n".to_owned(),
            "3:15",
            "ssh-ed25519",
        ),
        (
            // deploy-correctness 5: one would overwrite the other.
            "two secrets share a destination on a host",
            format!(
                "deployment = \"x\"\n[hosts.h]\ntarget = \"local\"\nsystem = \"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x\"\n{}{}",
                "[secrets.a]\nfile = \"prov.toml\"\nhosts = [\"h\"]\ndestination = \"/run/keys/same\"\nrecipients = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBztx5z6E+BsKT1rOWLRrTKL3Iz0o+A3cm1fDwXnElVW\"]\n",
                "[secrets.b]\nfile = \"prov.toml\"\nhosts = [\"h\"]\ndestination = \"/run/keys/same\"\nrecipients = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBztx5z6E+BsKT1rOWLRrTKL3Iz0o+A3cm1fDwXnElVW\"]\n",
            ),
            "13:15",
            "both go to /run/keys/same on h",
        ),
        (
            // state-hardening 11: the output would always be null.
            "output names an attribute its resource does not have",
            host("[outputs]\nx = \"web.no_such_attr\"\n"),
            "9:10",
            "no_such_attr",
        ),
        (
            "keep_versions below one",
            "deployment = \"x\"\n[state]\nkeep_versions = 0\n".to_owned(),
            "3:17",
            "keep_versions must be at least 1",
        ),
        (
            "system is not a store path",
            "deployment = \"x\"\n[hosts.h]\ntarget = \"local\"\nsystem = \"/tmp/x\"\n".to_owned(),
            "4:10",
            "store path",
        ),
    ]
}

#[test]
fn malformed_specs_fail_with_a_location_and_touch_nothing() {
    let cases = cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (name, spec, location, words) in cases {
        let ws = Workspace::new();
        ws.write("prov.toml", &spec);
        for command in [
            &["validate"][..],
            &["plan"][..],
            &["apply", "--auto-approve"][..],
        ] {
            let run = ws.prov(command);
            let located = regex_like_location(&run.stderr);
            let problems = [
                (run.code != 1).then(|| format!("exit {}", run.code)),
                run.stderr
                    .contains("panicked")
                    .then(|| "panicked".to_owned()),
                located
                    .is_none()
                    .then(|| "no prov.toml:LINE:COL".to_owned()),
                (!location.is_empty() && located.as_deref() != Some(location))
                    .then(|| format!("location {located:?}, expected {location}")),
                (!run.stderr.contains(words)).then(|| format!("message lacks {words:?}")),
                (!run.stderr.contains(" | ")).then(|| "no snippet".to_owned()),
                ws.path()
                    .join(".prov")
                    .exists()
                    .then(|| "state directory created".to_owned()),
            ];
            for problem in problems.into_iter().flatten() {
                failures.push(format!("{name} ({command:?}): {problem}\n{run}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The first `prov.toml:LINE:COL` in `text`, as `LINE:COL`.
fn regex_like_location(text: &str) -> Option<String> {
    let start = text.find("prov.toml:")? + "prov.toml:".len();
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':'))
        .unwrap_or(rest.len());
    let location = rest[..end].trim_end_matches(':');
    (location.split(':').count() == 2).then(|| location.to_owned())
}
