//! The Amazon EC2 provider of prov: key pairs, security groups and instances.
//!
//! Every EC2 call goes through one counting helper, so [`Ec2Provider::api_calls`]
//! tells how many requests a plan or apply made. Reads are batched: one
//! `Describe*` call per 200 ids, with filters (which, unlike id lists, do not
//! fail on ids that no longer exist).
//!
//! Attribute vocabulary (JSON values):
//! - `key_pair` (id = key name): `key_name`, `public_key` (both force new),
//!   `tags`; computed `fingerprint`, `key_pair_id`.
//! - `security_group` (id = `sg-…`): `group_name`, `description`, `vpc_id`
//!   (force new), `ingress`, `tags`; computed `owner_id`.
//! - `instance` (id = `i-…`): `ami`, `subnet_id`, `key_name` (force new),
//!   `instance_type`, `user_data_sha256`, `security_group_ids`, `tags`;
//!   computed `state`, `private_ip`, `public_ip`, `public_dns`,
//!   `availability_zone`. The request may carry `user_data` (plain text),
//!   which is sent but never reported back.
//!
//! `read` cannot see `public_key` (key pairs) or `user_data_sha256`
//! (instances) without one call per object, so it leaves them out and the
//! core keeps the recorded values; `create` and `update` do report them.
//! Every object is tagged `prov:token` at creation (for `find_by_token`);
//! observed `tags` never include that tag.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod attrs;
mod client;
mod collect;
mod error;
mod ingress;
mod instance;
mod key_pair;
mod provider;
mod security_group;
mod settings;
mod tags;
mod wait;

pub use provider::Ec2Provider;
pub use settings::Ec2Settings;

/// The provider's name as the spec writes it.
pub const PROVIDER_NAME: &str = "ec2";

/// The tag that records the idempotency token an object was created with.
pub const TOKEN_TAG: &str = "prov:token";

#[cfg(test)]
mod tests {
    use aws_smithy_types::base64::encode;

    /// Standard base64 (RFC 4648, with padding), as RunInstances wants its
    /// user data: the SDK's encoder, checked against the RFC's vectors.
    #[test]
    fn rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(input.as_bytes()), expected);
        }
        assert_eq!(encode([0xff, 0xfe, 0xfd]), "//79");
    }
}
