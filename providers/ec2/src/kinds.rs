//! The resource kinds this provider manages and the attributes of each:
//! known without the API client, so spec checks can use them in any build.

use prov_provider::{AttributeSchema, ProviderError};

use crate::PROVIDER_NAME;

/// Kind name of key pairs.
pub const KEY_PAIR: &str = "key_pair";
/// Kind name of security groups.
pub const SECURITY_GROUP: &str = "security_group";
/// Kind name of instances (the kind of an EC2 host).
pub const INSTANCE: &str = "instance";

/// The description a security group gets when the spec gives none (EC2
/// requires one).
pub const DEFAULT_DESCRIPTION: &str = "managed by prov";

/// The attributes of a key pair.
pub(crate) const KEY_PAIR_SCHEMA: &[AttributeSchema] = &[
    AttributeSchema::force_new("key_name"),
    AttributeSchema::force_new("public_key"),
    AttributeSchema::in_place("tags"),
    AttributeSchema::computed("fingerprint"),
    AttributeSchema::computed("key_pair_id"),
];

/// The attributes of a security group.
pub(crate) const SECURITY_GROUP_SCHEMA: &[AttributeSchema] = &[
    AttributeSchema::force_new("group_name"),
    AttributeSchema::force_new("description"),
    AttributeSchema::force_new("vpc_id"),
    AttributeSchema::in_place("ingress"),
    AttributeSchema::in_place("tags"),
    AttributeSchema::computed("owner_id"),
];

/// The attributes of an instance.
pub(crate) const INSTANCE_SCHEMA: &[AttributeSchema] = &[
    AttributeSchema::force_new("ami"),
    AttributeSchema::force_new("subnet_id"),
    AttributeSchema::force_new("key_name"),
    AttributeSchema::in_place("instance_type"),
    AttributeSchema::in_place("user_data_sha256"),
    AttributeSchema::in_place("security_group_ids"),
    AttributeSchema::in_place("tags"),
    // Desired always true: an instance stopped outside prov (or by an update
    // interrupted between stop and start) is drift that apply starts.
    AttributeSchema::in_place("running"),
    AttributeSchema::computed("state"),
    AttributeSchema::computed("private_ip"),
    AttributeSchema::computed("public_ip"),
    AttributeSchema::computed("public_dns"),
    AttributeSchema::computed("availability_zone"),
];

/// The resource kinds this provider manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `key_pair`.
    KeyPair,
    /// `security_group`.
    SecurityGroup,
    /// `instance`.
    Instance,
}

impl Kind {
    /// Every kind, in the order the provider lists them.
    #[cfg(feature = "client")]
    pub(crate) const NAMES: &'static [&'static str] = &[KEY_PAIR, SECURITY_GROUP, INSTANCE];

    /// The kind called `kind`.
    pub(crate) fn parse(kind: &str) -> Result<Self, ProviderError> {
        match kind {
            KEY_PAIR => Ok(Self::KeyPair),
            SECURITY_GROUP => Ok(Self::SecurityGroup),
            INSTANCE => Ok(Self::Instance),
            other => Err(ProviderError::unknown_kind(PROVIDER_NAME, other)),
        }
    }

    /// The kind's attributes.
    pub(crate) fn schema(self) -> &'static [AttributeSchema] {
        match self {
            Self::KeyPair => KEY_PAIR_SCHEMA,
            Self::SecurityGroup => SECURITY_GROUP_SCHEMA,
            Self::Instance => INSTANCE_SCHEMA,
        }
    }
}

/// The attributes of `kind`, known without a provider (spec checks); `None`
/// for a kind this provider does not manage.
#[must_use]
pub fn kind_schema(kind: &str) -> Option<&'static [AttributeSchema]> {
    Kind::parse(kind).ok().map(Kind::schema)
}
