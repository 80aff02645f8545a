//! The EC2 provider against a real moto server (`moto_server`, or the binary
//! named by `MOTO_SERVER`). Each test starts its own server on a free port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{InstanceAttributeName, Tag};
use prov_provider::{
    sha256_hex, Address, Attributes, CreateRequest, Desired, Observed, Provider, ProviderError,
    UpdateRequest,
};
use prov_provider_ec2::{Ec2Provider, Ec2Settings};
use serde_json::{json, Value};

#[path = "moto/lossy.rs"]
mod lossy;

const AMI: &str = "ami-12c6146b";
const ED25519_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk9nCQyFp8bQDR8oKgg0hW9dhC8K7uaWr9AEnRb6N7Y test";

/// A moto server on its own port, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let binary = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary} (set MOTO_SERVER): {e}"));
        let moto = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Credentials for the standard chain; set once, before any client exists.
fn test_credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
}

async fn provider_for(endpoint: String) -> Ec2Provider {
    test_credentials();
    let settings = Ec2Settings {
        region: Some("us-east-1".to_owned()),
        endpoint: Some(endpoint),
        profile: None,
    };
    Ec2Provider::new(&settings)
        .await
        .unwrap()
        .with_poll_interval(Duration::from_millis(100))
        .with_wait_timeout(Duration::from_secs(30))
}

async fn setup() -> (Moto, Ec2Provider) {
    let moto = Moto::start();
    let provider = provider_for(moto.endpoint()).await;
    (moto, provider)
}

fn attrs(v: Value) -> Attributes {
    serde_json::from_value(v).unwrap()
}

fn core_tags(address: &Address, extra: Value) -> Value {
    let mut tags = json!({"prov:deployment": "test", "prov:address": address.to_string()});
    if let (Value::Object(t), Value::Object(e)) = (&mut tags, extra) {
        t.extend(e);
    }
    tags
}

/// The provider kind of an address (hosts are instances).
fn kind_of(address: &Address) -> &str {
    if address.is_host() {
        "instance"
    } else {
        &address.kind
    }
}

async fn create(
    p: &Ec2Provider,
    address: &Address,
    token: &str,
    attributes: &Attributes,
) -> Observed {
    p.create(CreateRequest {
        address,
        kind: kind_of(address),
        token,
        attributes,
    })
    .await
    .unwrap()
}

/// Diffs `desired` against what `read` reports, keeping recorded values for
/// attributes the provider does not report (as the core does).
async fn diff_after_read(
    p: &Ec2Provider,
    kind: &str,
    recorded: &Observed,
    desired: &Attributes,
) -> Vec<prov_provider::AttributeChange> {
    let read = p
        .read(kind, std::slice::from_ref(&recorded.id))
        .await
        .unwrap();
    let mut current = recorded.attributes.clone();
    current.extend(read[&recorded.id].attributes.clone());
    let desired = Desired {
        attributes: desired.clone(),
        unknown: Default::default(),
    };
    p.diff(kind, &desired, &current).unwrap()
}

async fn update(
    p: &Ec2Provider,
    address: &Address,
    id: &str,
    current: &Attributes,
    desired: &Attributes,
) -> (Observed, Vec<String>) {
    let changes = p
        .diff(
            kind_of(address),
            &Desired {
                attributes: desired.clone(),
                unknown: Default::default(),
            },
            current,
        )
        .unwrap();
    assert!(!changes.is_empty(), "expected changes");
    let effects = p.update_effects(kind_of(address), &changes);
    let observed = p
        .update(UpdateRequest {
            address,
            kind: kind_of(address),
            id,
            attributes: desired,
            changes: &changes,
        })
        .await
        .unwrap();
    (observed, effects)
}

async fn raw_tags(p: &Ec2Provider, id: &str) -> BTreeMap<String, String> {
    let out = p
        .sdk_client()
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("resource-id")
                .values(id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap().to_owned(),
                t.value().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn user_data_of(p: &Ec2Provider, id: &str) -> String {
    let out = p
        .sdk_client()
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    out.user_data()
        .and_then(|v| v.value())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn key_pair_lifecycle_with_ed25519_key() {
    let (_moto, p) = setup().await;
    let address = Address::new("key_pair", "deploy", None);
    let desired = attrs(json!({
        "key_name": "deploy",
        "public_key": ED25519_KEY,
        "tags": core_tags(&address, json!({"team": "ops"})),
    }));
    let created = create(&p, &address, "tok-kp", &desired).await;
    assert_eq!(created.id, "deploy");
    assert_eq!(created.attributes["public_key"], json!(ED25519_KEY));
    assert!(created.attributes["fingerprint"].as_str().unwrap().len() > 10);
    let key_pair_id = created.attributes["key_pair_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(key_pair_id.starts_with("key-"), "{key_pair_id}");
    assert_eq!(created.attributes["tags"], desired["tags"]);
    assert_eq!(raw_tags(&p, &key_pair_id).await["prov:token"], "tok-kp");

    let read = p
        .read("key_pair", &["deploy".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(read.keys().collect::<Vec<_>>(), ["deploy"]);
    assert!(!read["deploy"].attributes.contains_key("public_key"));
    assert!(diff_after_read(&p, "key_pair", &created, &desired)
        .await
        .is_empty());

    let found = p
        .find_by_token("key_pair", &["tok-kp".into(), "tok-other".into()])
        .await
        .unwrap();
    assert_eq!(found.keys().collect::<Vec<_>>(), ["tok-kp"]);
    assert_eq!(found["tok-kp"].id, "deploy");

    let mut retagged = desired.clone();
    retagged.insert("tags".into(), core_tags(&address, json!({"env": "prod"})));
    let (updated, effects) = update(&p, &address, "deploy", &created.attributes, &retagged).await;
    assert!(effects.is_empty());
    assert_eq!(updated.attributes["tags"], retagged["tags"]);
    let tags = raw_tags(&p, &key_pair_id).await;
    assert_eq!(tags.get("team"), None);
    assert_eq!(tags["prov:token"], "tok-kp");
    assert!(diff_after_read(&p, "key_pair", &updated, &retagged)
        .await
        .is_empty());

    p.delete("key_pair", "deploy").await.unwrap();
    assert!(p
        .read("key_pair", &["deploy".into()])
        .await
        .unwrap()
        .is_empty());
    p.delete("key_pair", "deploy").await.unwrap();
}

#[tokio::test]
async fn key_pair_with_bad_key_reports_the_aws_code() {
    let (_moto, p) = setup().await;
    let address = Address::new("key_pair", "bad", None);
    let desired = attrs(json!({"key_name": "bad", "public_key": "ssh-ed25519 not-base64"}));
    let err = p
        .create(CreateRequest {
            address: &address,
            kind: "key_pair",
            token: "t",
            attributes: &desired,
        })
        .await
        .unwrap_err();
    match &err {
        ProviderError::Api {
            operation, message, ..
        } => {
            assert_eq!(operation, "ImportKeyPair");
            // EC2 says InvalidKey.Format, moto InvalidKeyPair.Format.
            assert!(message.starts_with("InvalidKey"), "{message}");
            assert!(message.contains(".Format: "), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn security_group_lifecycle() {
    let (_moto, p) = setup().await;
    let address = Address::new("security_group", "web", None);
    let desired = attrs(json!({
        "group_name": "web",
        "description": "web servers",
        "ingress": [
            {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["10.0.0.0/8", "0.0.0.0/0"]},
            {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["192.0.2.0/24"]},
            {"protocol": "all", "cidr_blocks": ["198.51.100.0/24"]},
        ],
        "tags": core_tags(&address, json!({})),
    }));
    let created = create(&p, &address, "tok-sg", &desired).await;
    assert!(created.id.starts_with("sg-"), "{}", created.id);
    assert_eq!(
        created.attributes["ingress"],
        json!([
            {"protocol": "-1", "cidr_blocks": ["198.51.100.0/24"]},
            {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["192.0.2.0/24"]},
            {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0", "10.0.0.0/8"]},
        ])
    );
    assert!(created.attributes["vpc_id"]
        .as_str()
        .unwrap()
        .starts_with("vpc-"));
    assert!(created.attributes["owner_id"].is_string());
    assert_eq!(created.attributes["tags"], desired["tags"]);
    assert_eq!(raw_tags(&p, &created.id).await["prov:token"], "tok-sg");
    assert!(diff_after_read(&p, "security_group", &created, &desired)
        .await
        .is_empty());

    let found = p
        .find_by_token("security_group", &["tok-sg".into()])
        .await
        .unwrap();
    assert_eq!(found["tok-sg"].id, created.id);

    let mut changed = desired.clone();
    changed.insert(
        "ingress".into(),
        json!([
            {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"]},
            {"protocol": "udp", "from_port": 53, "to_port": 53, "cidr_blocks": ["10.1.0.0/16"]},
        ]),
    );
    changed.insert("tags".into(), core_tags(&address, json!({"tier": "front"})));
    let (updated, effects) = update(&p, &address, &created.id, &created.attributes, &changed).await;
    assert!(effects.is_empty());
    assert_eq!(
        updated.attributes["ingress"],
        json!([
            {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"]},
            {"protocol": "udp", "from_port": 53, "to_port": 53, "cidr_blocks": ["10.1.0.0/16"]},
        ])
    );
    assert_eq!(updated.attributes["tags"]["tier"], "front");
    assert_eq!(updated.id, created.id);
    assert!(diff_after_read(&p, "security_group", &updated, &changed)
        .await
        .is_empty());

    // A changed description forces replacement.
    let mut renamed = changed.clone();
    renamed.insert("description".into(), json!("other"));
    let changes = diff_after_read(&p, "security_group", &updated, &renamed).await;
    assert_eq!(changes.len(), 1);
    assert!(changes[0].forces_replacement);

    p.delete("security_group", &created.id).await.unwrap();
    assert!(p
        .read("security_group", std::slice::from_ref(&created.id))
        .await
        .unwrap()
        .is_empty());
    p.delete("security_group", &created.id).await.unwrap();
}

/// The SDK sends a request again when its answer is lost (a connection
/// closed, a timeout); AWS may have applied the first one. Ingress rules
/// authorized twice must not fail the create.
#[tokio::test]
async fn a_lost_answer_to_authorize_does_not_fail_the_create() {
    let moto = Moto::start();
    let proxy = lossy::LossyProxy::start(moto.port, "AuthorizeSecurityGroupIngress");
    let p = provider_for(format!("http://127.0.0.1:{}", proxy.port)).await;
    let address = Address::new("security_group", "lossy", None);
    let desired = attrs(json!({
        "group_name": "lossy",
        "description": "lossy",
        "ingress": [
            {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["192.0.2.0/24"]},
            {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"]},
        ],
        "tags": core_tags(&address, json!({})),
    }));
    let created = p
        .create(CreateRequest {
            address: &address,
            kind: "security_group",
            token: "tok-lossy",
            attributes: &desired,
        })
        .await;
    assert!(
        proxy.seen() >= 2,
        "the answer was lost and the request sent again"
    );
    let created = created.unwrap();
    assert_eq!(
        created.attributes["ingress"],
        json!([
            {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["192.0.2.0/24"]},
            {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"]},
        ])
    );
}

/// A create whose answer is lost: the SDK sends it again and AWS says the
/// object exists. It is ours (it carries the request's token), so the create
/// goes on with it instead of failing and leaving it for the next run.
#[tokio::test]
async fn a_lost_answer_to_a_create_finds_the_object_by_its_token() {
    let moto = Moto::start();
    for (action, address, attributes) in [
        (
            "ImportKeyPair",
            Address::new("key_pair", "lossy", None),
            json!({"key_name": "lossy", "public_key": ED25519_KEY}),
        ),
        (
            "CreateSecurityGroup",
            Address::new("security_group", "lossy", None),
            json!({
                "group_name": "lossy",
                "description": "lossy",
                "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["192.0.2.0/24"]}],
            }),
        ),
    ] {
        let proxy = lossy::LossyProxy::start(moto.port, action);
        let p = provider_for(format!("http://127.0.0.1:{}", proxy.port)).await;
        let mut attributes = attrs(attributes);
        attributes.insert("tags".into(), core_tags(&address, json!({})));
        let token = format!("tok-{action}");
        let created = p
            .create(CreateRequest {
                address: &address,
                kind: kind_of(&address),
                token: &token,
                attributes: &attributes,
            })
            .await;
        assert!(
            proxy.seen() >= 2,
            "{action}: the answer was lost and the request sent again"
        );
        let created = created.unwrap_or_else(|e| panic!("{action}: {e}"));
        let found = p.find_by_token(kind_of(&address), &[token]).await.unwrap();
        assert_eq!(found.len(), 1, "{action}: one object");
        assert_eq!(found.values().next().unwrap().id, created.id, "{action}");
        if action == "CreateSecurityGroup" {
            assert_eq!(created.attributes["ingress"], attributes["ingress"]);
        }
    }
}

/// As above, for the rules an update revokes.
#[tokio::test]
async fn a_lost_answer_to_revoke_does_not_fail_the_update() {
    let moto = Moto::start();
    let proxy = lossy::LossyProxy::start(moto.port, "RevokeSecurityGroupIngress");
    let p = provider_for(format!("http://127.0.0.1:{}", proxy.port)).await;
    let address = Address::new("security_group", "lossy", None);
    let ssh =
        json!({"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["192.0.2.0/24"]});
    let https =
        json!({"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"]});
    let with = |rules: Value| {
        attrs(json!({
            "group_name": "lossy",
            "description": "lossy",
            "ingress": rules,
            "tags": core_tags(&address, json!({})),
        }))
    };
    let created = create(&p, &address, "tok-lossy", &with(json!([ssh, https]))).await;
    let (updated, _) = update(
        &p,
        &address,
        &created.id,
        &created.attributes,
        &with(json!([https])),
    )
    .await;
    assert!(
        proxy.seen() >= 2,
        "the answer was lost and the request sent again"
    );
    assert_eq!(updated.attributes["ingress"], json!([https]));
}

#[tokio::test]
async fn instance_lifecycle() {
    let (_moto, p) = setup().await;
    let sg_a = create(
        &p,
        &Address::new("security_group", "a", None),
        "tok-a",
        &attrs(json!({"group_name": "a", "ingress": []})),
    )
    .await;
    let sg_b = create(
        &p,
        &Address::new("security_group", "b", None),
        "tok-b",
        &attrs(json!({"group_name": "b"})),
    )
    .await;
    create(
        &p,
        &Address::new("key_pair", "k", None),
        "tok-k",
        &attrs(json!({"key_name": "k", "public_key": ED25519_KEY})),
    )
    .await;

    let address = Address::host("web", Some(0));
    let desired = attrs(json!({
        "ami": AMI,
        "instance_type": "t3.micro",
        "key_name": "k",
        "security_group_ids": [sg_a.id],
        "user_data": "one",
        "user_data_sha256": sha256_hex(b"one"),
        "tags": core_tags(&address, json!({"Name": "web-0"})),
    }));
    let created = create(&p, &address, "tok-web-0", &desired).await;
    let a = &created.attributes;
    assert!(created.id.starts_with("i-"));
    assert_eq!(a["state"], "running");
    assert_eq!(a["ami"], AMI);
    assert_eq!(a["instance_type"], "t3.micro");
    assert_eq!(a["key_name"], "k");
    assert_eq!(a["security_group_ids"], json!([sg_a.id]));
    assert_eq!(a["user_data_sha256"], json!(sha256_hex(b"one")));
    assert!(!a.contains_key("user_data"));
    assert!(a["private_ip"].is_string());
    assert!(a["availability_zone"]
        .as_str()
        .unwrap()
        .starts_with("us-east-1"));
    assert!(a["subnet_id"].as_str().unwrap().starts_with("subnet-"));
    assert_eq!(a["tags"], desired["tags"]);
    assert_eq!(raw_tags(&p, &created.id).await["prov:token"], "tok-web-0");
    assert_eq!(user_data_of(&p, &created.id).await, "b25l"); // base64("one")
    let read = p
        .read("instance", std::slice::from_ref(&created.id))
        .await
        .unwrap();
    assert!(!read[&created.id]
        .attributes
        .contains_key("user_data_sha256"));
    assert!(diff_after_read(&p, "instance", &created, &desired)
        .await
        .is_empty());

    // Tags and security groups change without a restart.
    let mut next = desired.clone();
    next.insert(
        "tags".into(),
        core_tags(&address, json!({"Name": "web-zero"})),
    );
    next.insert("security_group_ids".into(), json!([sg_b.id, sg_a.id]));
    let (updated, effects) = update(&p, &address, &created.id, &created.attributes, &next).await;
    assert!(effects.is_empty(), "{effects:?}");
    let mut both = vec![sg_a.id.clone(), sg_b.id.clone()];
    both.sort();
    assert_eq!(updated.attributes["security_group_ids"], json!(both));
    assert_eq!(updated.attributes["tags"]["Name"], "web-zero");
    assert!(diff_after_read(&p, "instance", &updated, &next)
        .await
        .is_empty());

    // Instance type and user data go through stop, modify, start.
    let mut bigger = next.clone();
    bigger.insert("instance_type".into(), json!("t3.large"));
    bigger.insert("user_data".into(), json!("two"));
    bigger.insert("user_data_sha256".into(), json!(sha256_hex(b"two")));
    let (resized, effects) = update(&p, &address, &created.id, &updated.attributes, &bigger).await;
    assert_eq!(effects, ["the instance is stopped and started"]);
    assert_eq!(resized.id, created.id);
    assert_eq!(resized.attributes["state"], "running");
    assert_eq!(resized.attributes["instance_type"], "t3.large");
    assert_eq!(
        resized.attributes["user_data_sha256"],
        json!(sha256_hex(b"two"))
    );
    let read = p
        .read("instance", std::slice::from_ref(&created.id))
        .await
        .unwrap();
    assert_eq!(read[&created.id].attributes["instance_type"], "t3.large");
    assert_eq!(read[&created.id].attributes["state"], "running");
    assert_eq!(user_data_of(&p, &created.id).await, "dHdv"); // base64("two")
    assert!(diff_after_read(&p, "instance", &resized, &bigger)
        .await
        .is_empty());

    // A new AMI forces replacement.
    let mut other_ami = bigger.clone();
    other_ami.insert("ami".into(), json!("ami-0000000000000000a"));
    let changes = diff_after_read(&p, "instance", &resized, &other_ami).await;
    assert!(changes.len() == 1 && changes[0].forces_replacement);

    p.delete("instance", &created.id).await.unwrap();
    assert!(p
        .read("instance", std::slice::from_ref(&created.id))
        .await
        .unwrap()
        .is_empty());
    p.delete("instance", &created.id).await.unwrap();
    p.delete("security_group", &sg_a.id).await.unwrap();
    p.delete("security_group", &sg_b.id).await.unwrap();
}

#[tokio::test]
async fn instance_without_optional_attributes_diffs_empty() {
    let (_moto, p) = setup().await;
    let address = Address::host("bare", None);
    let desired = attrs(json!({"ami": AMI, "tags": core_tags(&address, json!({}))}));
    let created = create(&p, &address, "tok-bare", &desired).await;
    assert!(created.attributes["user_data_sha256"].is_null());
    assert!(created.attributes["key_name"].is_null());
    assert!(diff_after_read(&p, "instance", &created, &desired)
        .await
        .is_empty());
}

#[tokio::test]
async fn tag_drift_is_read() {
    let (_moto, p) = setup().await;
    let address = Address::host("drift", None);
    let desired = attrs(json!({
        "ami": AMI,
        "instance_type": "t3.micro",
        "tags": core_tags(&address, json!({"owner": "alice"})),
    }));
    let created = create(&p, &address, "tok-drift", &desired).await;
    p.sdk_client()
        .create_tags()
        .resources(&created.id)
        .tags(Tag::builder().key("owner").value("mallory").build())
        .send()
        .await
        .unwrap();
    let read = p
        .read("instance", std::slice::from_ref(&created.id))
        .await
        .unwrap();
    assert_eq!(read[&created.id].attributes["tags"]["owner"], "mallory");
    let changes = diff_after_read(&p, "instance", &created, &desired).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].name, "tags");
    assert!(!changes[0].forces_replacement);
}

#[tokio::test]
async fn instance_terminated_behind_our_back_is_absent() {
    let (_moto, p) = setup().await;
    let address = Address::host("gone", None);
    let desired = attrs(json!({"ami": AMI, "instance_type": "t3.micro"}));
    let created = create(&p, &address, "tok-gone", &desired).await;
    let kept = create(&p, &Address::host("kept", None), "tok-kept", &desired).await;
    p.sdk_client()
        .terminate_instances()
        .instance_ids(&created.id)
        .send()
        .await
        .unwrap();
    let read = p
        .read("instance", &[created.id.clone(), kept.id.clone()])
        .await
        .unwrap();
    assert_eq!(read.keys().collect::<Vec<_>>(), [&kept.id]);
    assert!(p
        .find_by_token("instance", &["tok-gone".into()])
        .await
        .unwrap()
        .is_empty());
    p.delete("instance", &created.id).await.unwrap();
    p.delete("instance", "i-0123456789abcdef0").await.unwrap();
}

#[tokio::test]
async fn find_by_token_finds_an_instance() {
    let (_moto, p) = setup().await;
    let desired = attrs(json!({"ami": AMI, "instance_type": "t3.micro", "tags": {"Name": "x"}}));
    let a = create(&p, &Address::host("a", None), "tok-a", &desired).await;
    let b = create(&p, &Address::host("b", None), "tok-b", &desired).await;
    let before = p.api_calls();
    let found = p
        .find_by_token(
            "instance",
            &["tok-a".into(), "tok-b".into(), "tok-never".into()],
        )
        .await
        .unwrap();
    assert_eq!(p.api_calls() - before, 1);
    assert_eq!(found.len(), 2);
    assert_eq!(found["tok-a"].id, a.id);
    assert_eq!(found["tok-b"].id, b.id);
    assert_eq!(found["tok-a"].attributes["tags"], json!({"Name": "x"}));
}

#[tokio::test]
async fn reading_250_instances_takes_at_most_3_calls() {
    let (_moto, p) = setup().await;
    // One reservation per instance: the worst case for moto's pagination.
    let mut ids = Vec::new();
    for n in 0..250 {
        let out = p
            .sdk_client()
            .run_instances()
            .image_id(AMI)
            .min_count(1)
            .max_count(1)
            .client_token(format!("bulk-{n}"))
            .send()
            .await
            .unwrap();
        ids.push(out.instances()[0].instance_id().unwrap().to_owned());
    }
    // Noise that must not show up.
    p.sdk_client()
        .run_instances()
        .image_id(AMI)
        .min_count(20)
        .max_count(20)
        .send()
        .await
        .unwrap();
    let mut asked = ids.clone();
    asked.push("i-0000000000000dead".to_owned());
    let before = p.api_calls();
    let read = p.read("instance", &asked).await.unwrap();
    let calls = p.api_calls() - before;
    eprintln!("read of 250 instances: {calls} DescribeInstances calls");
    assert!(calls <= 3, "{calls} DescribeInstances calls");
    assert_eq!(read.len(), 250);
    assert!(ids.iter().all(|id| read.contains_key(id)));
}

#[tokio::test]
async fn unreachable_endpoint_is_reported() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = provider_for(format!("http://127.0.0.1:{port}")).await;
    let err = p.read("instance", &["i-1".into()]).await.unwrap_err();
    eprintln!("{err}");
    match &err {
        ProviderError::Api {
            operation, message, ..
        } => {
            assert_eq!(operation, "DescribeInstances");
            assert!(
                message.contains("could not reach the EC2 endpoint"),
                "{message}"
            );
            assert!(message.contains(&port.to_string()), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(p.api_calls() >= 1);
}

/// The marks a deployment `d` puts on an object at `address`, with a user
/// tag that is not a mark.
fn marked_tags(deployment: &str, address: &Address) -> Value {
    json!({
        "prov:deployment": deployment,
        "prov:address": address.to_string(),
        "prov:env": "e1",
        "prov:env-id": "env-6f1c",
        "prov:expires-at": "2030-01-01T00:00:00Z",
        "team": "ops",
    })
}

/// The marks `find_marked` should report for an object tagged `tags` and
/// created with `token`: the `prov:*` tags and `Name`, the token included.
fn expected_marks(tags: &Value, token: &str) -> BTreeMap<String, String> {
    let mut marks: BTreeMap<String, String> = tags
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("prov:") || *k == "Name")
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    marks.insert("prov:token".to_owned(), token.to_owned());
    marks
}

/// Kinds and ids of what `find_marked(deployment)` lists.
async fn marked_ids(p: &Ec2Provider, deployment: &str) -> Vec<(String, String)> {
    p.find_marked(deployment)
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|m| (m.kind, m.id))
        .collect()
}

#[tokio::test]
async fn find_marked_lists_the_live_objects_of_a_deployment() {
    let (_moto, p) = setup().await;
    let kp_address = Address::new("key_pair", "deploy", None);
    let kp_tags = marked_tags("d", &kp_address);
    let kp = create(
        &p,
        &kp_address,
        "tok-m-kp",
        &attrs(json!({"key_name": "d-deploy", "public_key": ED25519_KEY, "tags": kp_tags})),
    )
    .await;
    let sg_address = Address::new("security_group", "web", None);
    let sg_tags = marked_tags("d", &sg_address);
    let sg = create(
        &p,
        &sg_address,
        "tok-m-sg",
        &attrs(json!({"group_name": "d-web", "tags": sg_tags})),
    )
    .await;
    let web_address = Address::host("web", Some(0));
    let mut web_tags = marked_tags("d", &web_address);
    web_tags["Name"] = json!("d-web[0]");
    let web = create(
        &p,
        &web_address,
        "tok-m-web",
        &attrs(json!({
            "ami": AMI, "instance_type": "t3.micro", "key_name": "d-deploy",
            "security_group_ids": [sg.id], "tags": web_tags,
        })),
    )
    .await;
    // Another deployment's instance, and one prov did not make.
    let other_address = Address::host("web", Some(0));
    let other = create(
        &p,
        &other_address,
        "tok-m-other",
        &attrs(json!({"ami": AMI, "tags": marked_tags("other", &other_address)})),
    )
    .await;
    let untagged = p
        .sdk_client()
        .run_instances()
        .image_id(AMI)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let untagged = untagged.instances()[0].instance_id().unwrap().to_owned();

    let before = p.api_calls();
    let found = p.find_marked("d").await.unwrap().unwrap();
    // DescribeKeyPairs, DescribeSecurityGroups, DescribeInstances: counted.
    assert_eq!(p.api_calls() - before, 3);
    let ids: Vec<(&str, &str)> = found
        .iter()
        .map(|m| (m.kind.as_str(), m.id.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("instance", web.id.as_str()),
            ("key_pair", "d-deploy"),
            ("security_group", sg.id.as_str()),
        ]
    );
    assert!(!ids.iter().any(|(_, id)| *id == other.id || *id == untagged));
    assert_eq!(found[0].marks, expected_marks(&web_tags, "tok-m-web"));
    assert_eq!(found[0].marks["Name"], "d-web[0]");
    assert_eq!(found[1].marks, expected_marks(&kp_tags, "tok-m-kp"));
    assert_eq!(found[2].marks, expected_marks(&sg_tags, "tok-m-sg"));
    assert!(!found[0].marks.contains_key("team"));
    assert_eq!(kp.id, found[1].id);

    // Creation times: the instance's launch time as EC2 reports it, the key
    // pair's create time; a security group has none.
    let described = p
        .sdk_client()
        .describe_instances()
        .instance_ids(&web.id)
        .send()
        .await
        .unwrap();
    let launch_time = described.reservations()[0].instances()[0]
        .launch_time()
        .unwrap()
        .fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
        .unwrap();
    assert_eq!(found[0].created.as_deref(), Some(launch_time.as_str()));
    let kp_created = found[1].created.as_deref().unwrap();
    assert!(
        kp_created.len() >= 20 && kp_created.as_bytes()[10] == b'T' && kp_created.ends_with('Z'),
        "{kp_created}"
    );
    assert_eq!(found[2].created, None);

    assert_eq!(
        marked_ids(&p, "other").await,
        [("instance".to_owned(), other.id.clone())]
    );
    assert!(marked_ids(&p, "nobody").await.is_empty());

    // moto (5.2) honours the `tag:prov:deployment` filter of all three
    // Describe calls. EC2 filter values are patterns (`?`, `*`), and moto
    // matches them too: it answers a filter of `?` with the objects of `d`.
    // They are not listed, because the tag is checked again on our side.
    let by_pattern = p
        .sdk_client()
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:prov:deployment")
                .values("?")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let served: Vec<&str> = by_pattern
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id())
        .collect();
    assert_eq!(served, [web.id.as_str()]);
    assert!(marked_ids(&p, "?").await.is_empty());
    assert!(marked_ids(&p, "*").await.is_empty());

    // A deleted (terminated) instance is no longer listed.
    p.delete("instance", &web.id).await.unwrap();
    assert_eq!(
        marked_ids(&p, "d").await,
        [
            ("key_pair".to_owned(), "d-deploy".to_owned()),
            ("security_group".to_owned(), sg.id.clone()),
        ]
    );
}
