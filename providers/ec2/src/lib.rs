//! The Amazon EC2 provider of prov: key pairs, security groups and instances.
//!
//! Without the `client` feature (on by default) the crate holds only what
//! a spec needs: the settings type and the kinds' attribute schemas.
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
//! observed `tags` never include that tag. `find_marked` lists the live
//! objects whose `prov:deployment` tag names a deployment, whatever state
//! says, with their `prov:*` tags and `Name`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

// The API client and the provider: the `client` feature (on by default).
#[cfg(feature = "client")]
mod attrs;
#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod error;
#[cfg(feature = "client")]
mod ingress;
#[cfg(feature = "client")]
mod instance;
#[cfg(feature = "client")]
mod key_pair;
#[cfg(feature = "client")]
mod object;
#[cfg(feature = "client")]
mod provider;
#[cfg(feature = "client")]
mod security_group;
#[cfg(feature = "client")]
mod tags;
#[cfg(feature = "client")]
mod wait;

// Known in every build: what the spec and its checks need.
mod kinds;
mod settings;

pub use kinds::{
    kind_schema, DEFAULT_DESCRIPTION, INSTANCE as INSTANCE_KIND, KEY_PAIR as KEY_PAIR_KIND,
    SECURITY_GROUP as SECURITY_GROUP_KIND,
};
#[cfg(feature = "client")]
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
