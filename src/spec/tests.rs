//! Tests of the spec front end: a full valid spec, and a table of broken ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use prov_provider::{sha256_hex, Address, Reference};
use serde_json::json;

use super::*;

const FULL: &str = r##"deployment = "demo"

[state]
path = "state-dir"

[providers.ec2]
region = "us-east-1"
endpoint = "http://127.0.0.1:5000"

[key_pairs.deploy]
public_key_file = "keys/deploy.pub"
tags = { team = "infra" }

[key_pairs.ops]
public_key = "  ssh-ed25519 AAAAC3Nza ops@example  \n"

[security_groups.web]
description = "web servers"
[[security_groups.web.ingress]]
protocol = "TCP"
from_port = 443
to_port = 443
cidr_blocks = ["10.0.0.0/8", "0.0.0.0/0"]
[[security_groups.web.ingress]]
protocol = "tcp"
from_port = 80
to_port = 80
cidr_blocks = ["0.0.0.0/0"]
[[security_groups.web.ingress]]
protocol = "all"
cidr_blocks = ["10.1.0.0/16"]

[security_groups.ssh]
vpc_id = "vpc-123"
[[security_groups.ssh.ingress]]
protocol = "icmp"
from_port = 8
to_port = 0
cidr_blocks = ["0.0.0.0/0"]

[hosts.web]
target = "ec2"
count = 3
ami = "ami-12c6146b"
instance_type = "t3.micro"
security_groups = ["web", "ssh"]
key_pair = "deploy"
tags = { role = "web" }
user_data_file = "cloud-init.yaml"
depends_on = ["db"]

[hosts.db]
target = "ec2"
ami = "ami-1"
instance_type = "t3.small"
subnet = "subnet-9"
tags = { Name = "database" }
user_data = "#!/bin/sh\necho hi\n"

[hosts.none]
target = "ec2"
count = 0
ami = "ami-1"
instance_type = "t3.small"

[outputs]
web_ips = "web[*].public_ip"
first = "web[0].id"
key = "key_pair.deploy.fingerprint"
db = "db.private_ip"
"##;

const CLOUD_INIT: &str = "#cloud-config\npackages: [nginx]\n";

/// Writes FULL and the files it refers to into a fresh directory.
fn full_spec_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(
        dir.path().join("keys/deploy.pub"),
        "ssh-ed25519 AAAAC3NzaDEPLOY deploy@example\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("cloud-init.yaml"), CLOUD_INIT).unwrap();
    let path = dir.path().join("prov.toml");
    std::fs::write(&path, FULL).unwrap();
    (dir, path)
}

fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

#[test]
fn full_spec_converts() {
    let (dir, path) = full_spec_dir();
    let spec = load(&path).unwrap();
    assert_eq!(spec.deployment, "demo");
    assert_eq!(spec.source, path);
    assert_eq!(spec.source_hash, sha256_hex(FULL.as_bytes()));
    assert_eq!(spec.state.path, dir.path().join("state-dir"));
    let ec2 = spec.providers.ec2.clone().unwrap();
    assert_eq!(ec2.region.as_deref(), Some("us-east-1"));
    assert_eq!(ec2.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(ec2.profile, None);

    let order: Vec<String> = spec
        .resources
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(
        order,
        [
            "db",
            "web[0]",
            "web[1]",
            "web[2]",
            "key_pair.deploy",
            "key_pair.ops",
            "security_group.ssh",
            "security_group.web"
        ]
    );
    assert!(spec.resources.iter().all(|r| r.provider == "ec2"));
    let get = |a: &str| {
        spec.resources
            .iter()
            .find(|r| r.address == addr(a))
            .unwrap()
    };

    let kp = get("key_pair.deploy");
    assert_eq!(kp.kind, "key_pair");
    assert_eq!(kp.attributes["key_name"], json!("demo-deploy"));
    assert_eq!(
        kp.attributes["public_key"],
        json!("ssh-ed25519 AAAAC3NzaDEPLOY deploy@example")
    );
    assert_eq!(
        kp.attributes["tags"],
        json!({"team": "infra", "prov:deployment": "demo", "prov:address": "key_pair.deploy"})
    );
    assert!(kp.references.is_empty() && kp.depends_on.is_empty());
    assert_eq!(
        get("key_pair.ops").attributes["public_key"],
        json!("ssh-ed25519 AAAAC3Nza ops@example")
    );

    let web_sg = get("security_group.web");
    assert_eq!(web_sg.kind, "security_group");
    assert_eq!(web_sg.attributes["group_name"], json!("demo-web"));
    assert_eq!(web_sg.attributes["description"], json!("web servers"));
    assert!(!web_sg.attributes.contains_key("vpc_id"));
    assert_eq!(
        web_sg.attributes["ingress"],
        json!([
            {"protocol": "-1", "from_port": -1, "to_port": -1, "cidr_blocks": ["10.1.0.0/16"]},
            {"protocol": "tcp", "from_port": 80, "to_port": 80, "cidr_blocks": ["0.0.0.0/0"]},
            {"protocol": "tcp", "from_port": 443, "to_port": 443,
             "cidr_blocks": ["0.0.0.0/0", "10.0.0.0/8"]},
        ])
    );
    let ssh_sg = get("security_group.ssh");
    assert_eq!(ssh_sg.attributes["description"], json!("managed by prov"));
    assert_eq!(ssh_sg.attributes["vpc_id"], json!("vpc-123"));
    assert_eq!(
        ssh_sg.attributes["tags"],
        json!({"prov:deployment": "demo", "prov:address": "security_group.ssh"})
    );

    let web1 = get("web[1]");
    assert_eq!(web1.kind, "instance");
    assert_eq!(web1.address, Address::host("web", Some(1)));
    assert_eq!(web1.attributes["ami"], json!("ami-12c6146b"));
    assert_eq!(web1.attributes["instance_type"], json!("t3.micro"));
    assert!(!web1.attributes.contains_key("subnet_id"));
    assert_eq!(web1.attributes["key_name"], json!("key_pair.deploy"));
    assert_eq!(
        web1.attributes["security_group_ids"],
        json!(["security_group.web", "security_group.ssh"])
    );
    assert_eq!(
        web1.references["key_name"],
        Reference {
            targets: vec![addr("key_pair.deploy")],
            field: "key_name".into(),
            list: false
        }
    );
    assert_eq!(
        web1.references["security_group_ids"],
        Reference {
            targets: vec![addr("security_group.web"), addr("security_group.ssh")],
            field: "id".into(),
            list: true
        }
    );
    assert_eq!(web1.attributes["user_data"], json!(CLOUD_INIT));
    assert_eq!(
        web1.attributes["user_data_sha256"],
        json!(sha256_hex(CLOUD_INIT.as_bytes()))
    );
    assert_eq!(
        web1.attributes["tags"],
        json!({"Name": "demo-web[1]", "role": "web",
               "prov:deployment": "demo", "prov:address": "web[1]"})
    );
    let deps: Vec<String> = web1.depends_on.iter().map(ToString::to_string).collect();
    assert_eq!(
        deps,
        [
            "db",
            "key_pair.deploy",
            "security_group.ssh",
            "security_group.web"
        ]
    );

    let db = get("db");
    assert_eq!(db.address.index, None);
    assert_eq!(db.attributes["subnet_id"], json!("subnet-9"));
    assert!(db.references.is_empty() && db.depends_on.is_empty());
    assert!(!db.attributes.contains_key("security_group_ids"));
    assert!(!db.attributes.contains_key("key_name"));
    assert_eq!(db.attributes["user_data"], json!("#!/bin/sh\necho hi\n"));
    assert_eq!(
        db.attributes["tags"],
        json!({"Name": "database", "prov:deployment": "demo", "prov:address": "db"})
    );

    let hosts: Vec<String> = spec.hosts.keys().map(ToString::to_string).collect();
    assert_eq!(hosts, ["db", "web[0]", "web[1]", "web[2]"]);
    let info = &spec.hosts[&Address::host("web", Some(2))];
    assert_eq!(info.name, "web");
    assert_eq!(info.tags, [("role".to_owned(), "web".to_owned())].into());

    let out = |n: &str| {
        let o = &spec.outputs[n];
        (o.address.as_str(), o.attribute.as_str())
    };
    assert_eq!(out("web_ips"), ("web[*]", "public_ip"));
    assert_eq!(out("first"), ("web[0]", "id"));
    assert_eq!(out("key"), ("key_pair.deploy", "fingerprint"));
    assert_eq!(out("db"), ("db", "private_ip"));
}

#[test]
fn hosts_depending_on_a_counted_host_wait_for_every_index() {
    let src = r##"deployment = "d"
[providers.ec2]
[hosts.web]
target = "ec2"
count = 2
ami = "a"
instance_type = "t"
[hosts.lb]
target = "ec2"
ami = "a"
instance_type = "t"
depends_on = ["web"]
"##;
    let spec = parse_toml(src, Path::new("x.toml")).unwrap();
    let lb = spec
        .resources
        .iter()
        .find(|r| r.address.name == "lb")
        .unwrap();
    let deps: Vec<String> = lb.depends_on.iter().map(ToString::to_string).collect();
    assert_eq!(deps, ["web[0]", "web[1]"]);
    assert_eq!(spec.state.path, Path::new(".prov"));
}

#[test]
fn example_fixture_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/specs/ec2.toml");
    let spec = load(&path).unwrap();
    assert_eq!(spec.deployment, "example");
    assert!(spec.hosts.contains_key(&Address::host("web", Some(1))));
}

/// `(name, source, expected (line, col), kind)`.
type Case = (&'static str, &'static str, (usize, usize), ErrorKind);

const FILE: &str = "specs/test.toml";

#[rustfmt::skip]
const CASES: &[Case] = &[
    ("libvirt: unset variable without a default", r##"deployment = "demo"
[hosts.web]
target = "libvirt"
base = "${PROV_TEST_SURELY_UNSET_VAR}/debian.qcow2"
"##, (4, 8), ErrorKind::InvalidValue),
    ("libvirt: initrd without kernel", r##"deployment = "demo"
[hosts.web]
target = "libvirt"
base = "nixos.qcow2"
[hosts.web.libvirt]
initrd = "/boot/initrd"
"##, (6, 10), ErrorKind::Conflict),
    ("libvirt: unknown disk bus", r##"deployment = "demo"
[hosts.web]
target = "libvirt"
base = "nixos.qcow2"
[hosts.web.libvirt]
disk_bus = "ide"
"##, (6, 12), ErrorKind::InvalidValue),
    ("libvirt: fixed port shared by two hosts", r##"deployment = "demo"
[hosts.web]
target = "libvirt"
count = 2
base = "nixos.qcow2"
[hosts.web.libvirt]
ssh_port = 2222
"##, (7, 12), ErrorKind::Conflict),
    ("libvirt: no base", r##"deployment = "demo"
[hosts.web]
target = "libvirt"
"##, (2, 8), ErrorKind::MissingField),
    ("libvirt table on an ec2 host", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
[hosts.web.libvirt]
domain_type = "qemu"
"##, (7, 1), ErrorKind::InvalidValue),
    ("toml syntax: unterminated string", "deployment = \"demo\n", (1, 19), ErrorKind::Syntax),
    ("toml syntax: unclosed table header", "deployment = \"demo\"\n[providers.ec2]\nregion = \"us-east-1\"\n[hosts.web\n", (4, 11), ErrorKind::Syntax),
    ("unknown top-level key", r##"deployment = "demo"
[providers.ec2]
bogus = 1
"##, (3, 1), ErrorKind::Syntax),
    ("unknown provider", r##"deployment = "demo"
[providers.gcp]
"##, (2, 12), ErrorKind::Syntax),
    ("unknown host key", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
color = "red"
"##, (7, 1), ErrorKind::Syntax),
    ("count of the wrong type", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
count = "3"
ami = "a"
instance_type = "t"
"##, (5, 9), ErrorKind::Syntax),
    ("negative count", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
count = -1
ami = "a"
instance_type = "t"
"##, (5, 9), ErrorKind::InvalidValue),
    ("count over the limit", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
count = 1001
ami = "a"
instance_type = "t"
"##, (5, 9), ErrorKind::InvalidValue),
    ("missing deployment", "[providers.ec2]\n", (1, 1), ErrorKind::Syntax),
    ("invalid deployment name", "deployment = \"1demo\"\n", (1, 14), ErrorKind::InvalidName),
    ("deployment name too long", "deployment = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n", (1, 14), ErrorKind::InvalidName),
    ("empty deployment", "deployment = \"\"\n", (1, 14), ErrorKind::InvalidValue),
    ("invalid host name", r##"deployment = "demo"
[providers.ec2]
[hosts."9web"]
target = "ec2"
ami = "a"
instance_type = "t"
"##, (3, 8), ErrorKind::InvalidName),
    ("dangling key pair", r##"deployment = "demo"
[providers.ec2]
[key_pairs.deploy]
public_key = "ssh-ed25519 AAAA k"
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
key_pair = "deplo"
"##, (9, 12), ErrorKind::UndefinedReference),
    ("dangling security group", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
security_groups = ["web"]
"##, (7, 20), ErrorKind::UndefinedReference),
    ("dangling depends_on", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
depends_on = ["db"]
"##, (7, 15), ErrorKind::UndefinedReference),
    ("two-host cycle", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
depends_on = ["db"]
[hosts.db]
target = "ec2"
ami = "a"
instance_type = "t"
depends_on = ["web"]
"##, (12, 15), ErrorKind::Cycle),
    ("three-host cycle", r##"deployment = "demo"
[providers.ec2]
[hosts.a]
target = "ec2"
ami = "a"
instance_type = "t"
depends_on = ["b"]
[hosts.b]
target = "ec2"
ami = "a"
instance_type = "t"
depends_on = ["c"]
[hosts.c]
target = "ec2"
ami = "a"
instance_type = "t"
depends_on = ["a"]
"##, (17, 15), ErrorKind::Cycle),
    ("self dependency", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
depends_on = ["web"]
"##, (7, 15), ErrorKind::Cycle),
    ("host named like a key pair", r##"deployment = "demo"
[providers.ec2]
[key_pairs.web]
public_key = "ssh-ed25519 AAAA k"
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
"##, (5, 8), ErrorKind::DuplicateName),
    ("duplicate toml key", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
ami = "b"
instance_type = "t"
"##, (6, 1), ErrorKind::Syntax),
    ("duplicate security group entry", r##"deployment = "demo"
[providers.ec2]
[security_groups.web]
[hosts.web1]
target = "ec2"
ami = "a"
instance_type = "t"
security_groups = ["web", "web"]
"##, (8, 27), ErrorKind::DuplicateEntry),
    ("duplicate depends_on entry", r##"deployment = "demo"
[providers.ec2]
[hosts.db]
target = "ec2"
ami = "a"
instance_type = "t"
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
depends_on = ["db", "db"]
"##, (11, 21), ErrorKind::DuplicateEntry),
    ("duplicate cidr block", r##"deployment = "demo"
[providers.ec2]
[[security_groups.web.ingress]]
protocol = "tcp"
from_port = 22
to_port = 22
cidr_blocks = ["0.0.0.0/0", "0.0.0.0/0"]
"##, (7, 29), ErrorKind::DuplicateEntry),
    ("duplicate ingress rule", r##"deployment = "demo"
[providers.ec2]
[[security_groups.web.ingress]]
protocol = "tcp"
from_port = 22
to_port = 22
cidr_blocks = ["10.0.0.0/8", "0.0.0.0/0"]
[[security_groups.web.ingress]]
protocol = "TCP"
from_port = 22
to_port = 22
cidr_blocks = ["0.0.0.0/0"]
"##, (8, 1), ErrorKind::DuplicateEntry),
    ("port range backwards", r##"deployment = "demo"
[providers.ec2]
[[security_groups.web.ingress]]
protocol = "tcp"
from_port = 80
to_port = 22
cidr_blocks = ["0.0.0.0/0"]
"##, (6, 11), ErrorKind::InvalidValue),
    ("port out of range", r##"deployment = "demo"
[providers.ec2]
[[security_groups.web.ingress]]
protocol = "udp"
from_port = 53
to_port = 70000
cidr_blocks = ["0.0.0.0/0"]
"##, (6, 11), ErrorKind::InvalidValue),
    ("tcp rule without ports", r##"deployment = "demo"
[providers.ec2]
[[security_groups.web.ingress]]
protocol = "tcp"
cidr_blocks = ["0.0.0.0/0"]
"##, (3, 1), ErrorKind::MissingField),
    ("bad protocol", r##"deployment = "demo"
[providers.ec2]
[[security_groups.web.ingress]]
protocol = "tcpp"
from_port = 1
to_port = 2
cidr_blocks = ["0.0.0.0/0"]
"##, (4, 12), ErrorKind::InvalidValue),
    ("bad cidr", r##"deployment = "demo"
[providers.ec2]
[[security_groups.web.ingress]]
protocol = "tcp"
from_port = 1
to_port = 2
cidr_blocks = ["10.0.0.0/33"]
"##, (7, 16), ErrorKind::InvalidValue),
    ("empty cidr list", r##"deployment = "demo"
[providers.ec2]
[[security_groups.web.ingress]]
protocol = "all"
cidr_blocks = []
"##, (5, 15), ErrorKind::InvalidValue),
    ("reserved tag key", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
tags = { role = "web", "prov:address" = "x" }
"##, (7, 24), ErrorKind::ReservedTag),
    ("unsupported target", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "gcp"
"##, (4, 10), ErrorKind::UnsupportedTarget),
    ("missing ami", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
instance_type = "t"
"##, (3, 8), ErrorKind::MissingField),
    ("missing providers.ec2", r##"deployment = "demo"
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
"##, (3, 10), ErrorKind::MissingProvider),
    ("bad endpoint", r##"deployment = "demo"
[providers.ec2]
endpoint = "127.0.0.1:5000"
"##, (3, 12), ErrorKind::InvalidValue),
    ("both user_data and user_data_file", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
user_data = "#!/bin/sh"
user_data_file = "init.sh"
"##, (8, 18), ErrorKind::Conflict),
    ("missing public_key_file", r##"deployment = "demo"
[providers.ec2]
[key_pairs.deploy]
public_key_file = "no/such/key.pub"
"##, (4, 19), ErrorKind::File),
    ("neither public_key nor public_key_file", r##"deployment = "demo"
[providers.ec2]
[key_pairs.deploy]
tags = {}
"##, (3, 12), ErrorKind::MissingField),
    ("not a public key", r##"deployment = "demo"
[providers.ec2]
[key_pairs.deploy]
public_key = "-----BEGIN OPENSSH PRIVATE KEY-----"
"##, (4, 14), ErrorKind::InvalidValue),
    ("output to an unknown resource", r##"deployment = "demo"
[providers.ec2]
[outputs]
ip = "nope.public_ip"
"##, (4, 7), ErrorKind::UndefinedReference),
    ("output index beyond count", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
count = 2
ami = "a"
instance_type = "t"
[outputs]
ip = "web[2].public_ip"
"##, (9, 7), ErrorKind::UndefinedReference),
    ("output without attribute", r##"deployment = "demo"
[outputs]
ip = "web"
"##, (3, 6), ErrorKind::InvalidValue),
    ("output indexing an uncounted host", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
[outputs]
ip = "web[0].public_ip"
"##, (8, 7), ErrorKind::InvalidValue),
    ("output naming an attribute an instance lacks", r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
count = 2
ami = "a"
instance_type = "t"
[outputs]
ips = "web[*].public_ipv4"
"##, (9, 15), ErrorKind::UndefinedReference),
    ("output naming an attribute a key pair lacks", r##"deployment = "demo"
[providers.ec2]
[key_pairs.deploy]
public_key = "ssh-ed25519 AAAA k"
[outputs]
fp = "key_pair.deploy.public_ip"
"##, (6, 23), ErrorKind::UndefinedReference),
    ("output naming an attribute a local host lacks", r##"deployment = "demo"
[hosts.h]
target = "local"
[outputs]
ip = "h.public_ip"
"##, (5, 9), ErrorKind::UndefinedReference),
    ("output naming an ssh host, which has no attributes", r##"deployment = "demo"
[hosts.h]
target = "ssh"
[hosts.h.ssh]
address = "127.0.0.1"
[outputs]
ip = "h.ssh_host"
"##, (7, 9), ErrorKind::UndefinedReference),
];

#[test]
fn malformed_specs_report_located_errors() {
    assert!(CASES.len() >= 20);
    let mut failures = Vec::new();
    for (name, source, (line, col), kind) in CASES {
        let err = match parse_toml(source, Path::new(FILE)) {
            Ok(_) => {
                failures.push(format!("{name}: parsed without error"));
                continue;
            }
            Err(err) => err,
        };
        let rendered = err.to_string();
        if err.location() != Some((*line, *col)) || err.kind() != *kind {
            failures.push(format!(
                "{name}: expected {kind:?} at {line}:{col}, got {:?} at {:?}\n{rendered}",
                err.kind(),
                err.location()
            ));
            continue;
        }
        let gutter = line.to_string().len();
        let caret_line = format!("{} | {}^", " ".repeat(gutter), " ".repeat(col - 1));
        let snippet_line = format!("{line} | {}", source.lines().nth(line - 1).unwrap_or(""));
        if !rendered.starts_with("error: ")
            || !rendered.contains(&format!("--> {FILE}:{line}:{col}\n"))
            || !rendered.contains(&snippet_line)
            || !rendered.lines().any(|l| l.starts_with(&caret_line))
        {
            failures.push(format!("{name}: badly rendered:\n{rendered}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn renders_like_rustc() {
    let src = r##"deployment = "demo"
[providers.ec2]
[key_pairs.deploy]
public_key = "ssh-ed25519 AAAA k"
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
key_pair = "deplo"
"##;
    let err = parse_toml(src, Path::new("examples/ec2.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r##"error: host `web` refers to key pair `deplo`, which is not defined
 --> examples/ec2.toml:9:12
  |
9 | key_pair = "deplo"
  |            ^^^^^^^
  = help: defined key pairs: deploy"##
    );
}

#[test]
fn cycle_message_names_the_cycle() {
    let src = CASES.iter().find(|c| c.0 == "two-host cycle").unwrap().1;
    let err = parse_toml(src, Path::new(FILE)).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("error: dependency cycle: web -> db -> web\n"));
    let src = src.replace("depends_on = [\"web\"]", "depends_on = [\"cache\"]")
        + "[hosts.cache]\ntarget = \"ec2\"\nami = \"a\"\ninstance_type = \"t\"\ndepends_on = [\"web\"]\n";
    let err = parse_toml(&src, Path::new(FILE)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("error: dependency cycle: web -> db -> cache -> web\n"),
        "{err}"
    );
    assert_eq!(err.location(), Some((17, 15)));
}

#[test]
fn reports_every_problem_in_source_order() {
    let src = r##"deployment = "demo"
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
key_pair = "nope"
tags = { "prov:x" = "y" }
"##;
    let err = parse_toml(src, Path::new(FILE)).unwrap_err();
    let at: Vec<_> = err
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.col, d.kind))
        .collect();
    assert_eq!(
        at,
        [
            (3, 10, ErrorKind::MissingProvider),
            (6, 12, ErrorKind::UndefinedReference),
            (7, 10, ErrorKind::ReservedTag),
        ]
    );
    assert!(err.to_string().ends_with("error: the spec has 3 errors"));
}

#[test]
fn non_utf8_is_located() {
    let mut bytes = b"deployment = \"demo\"\n# caf".to_vec();
    bytes.extend([0xe9, b'\n']);
    let err = parse_toml_bytes(&bytes, Path::new(FILE)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Encoding);
    assert_eq!(err.location(), Some((2, 6)));
    assert!(err.to_string().contains(&format!("{FILE}:2:6")));
}

#[test]
fn io_and_format_errors_are_unlocated() {
    let err = load(Path::new("/nonexistent/prov.toml")).unwrap_err();
    assert_eq!(err.location(), None);
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err
        .to_string()
        .starts_with("error: cannot read spec /nonexistent/prov.toml: "));
    let err = load(Path::new("deploy.yaml")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedFormat);
    assert!(err.to_string().contains("`.yaml`"), "{err}");
    assert!(err.to_string().contains("TOML"), "{err}");
    assert!(err.to_string().contains("Nix"), "{err}");
    // A missing .nix spec is an I/O error, not an evaluation one.
    let err = load(Path::new("/nonexistent/deploy.nix")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}

#[test]
fn user_data_file_is_resolved_against_the_spec_directory() {
    let (dir, _) = full_spec_dir();
    let src = r##"deployment = "demo"
[providers.ec2]
[hosts.web]
target = "ec2"
ami = "a"
instance_type = "t"
user_data_file = "missing.yaml"
"##;
    let err = parse_toml(src, &dir.path().join("prov.toml")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::File);
    assert_eq!(err.location(), Some((7, 18)));
    let ok = src.replace("missing.yaml", "cloud-init.yaml");
    let spec = parse_toml(&ok, &dir.path().join("prov.toml")).unwrap();
    assert_eq!(spec.resources[0].attributes["user_data"], json!(CLOUD_INIT));
}

#[test]
fn garbage_never_panics() {
    let inputs = [
        "",
        "\n\n\n",
        "deployment = 1",
        "[[hosts]]",
        "deployment = \"d\"\n[hosts.web]\ncount = 99999999999999999999\n",
        "deployment = \"d\"\n[outputs]\nx = \"..\"\ny = \"[*].a\"\nz = \"web[*][*].a\"\n",
        "deployment = \"d\"\n[[security_groups.s.ingress]]\nprotocol = \"icmp\"\nfrom_port = -5\nto_port = 300\ncidr_blocks = [\"x\"]\n",
        "deployment = \"d\"\r\n[hosts.w]\r\ntarget = \"ec2\"\r\n",
        "deployment = \"d\"\n[hosts.\"é\"]\ntarget = \"\tec2\"\n",
    ];
    for input in inputs {
        if let Err(e) = parse_toml(input, Path::new(FILE)) {
            let _ = e.to_string();
        }
    }
}
