//! Making the material a renewal plan asks for: CAs, leaves signed by them,
//! the service-account key pair and the random secrets. Items the plan
//! keeps pass through untouched, byte for byte.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use super::inspect::{inspect, InspectError};
use super::renewal::{Action, Change, Existing};
use super::{
    desired, CertificateSpec, Form, ItemId, Kind, Usage, BACKDATE, CA_LIFETIME, LEAF_LIFETIME,
};
use crate::kube::model::Cluster;
use crate::kube::secret::Secret;

/// One item's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The certificate (or, for a key pair, the public key) in PEM; `None`
    /// for a random secret.
    pub public: Option<String>,
    /// The private key in PEM, or the secret.
    pub secret: Secret,
}

/// All the material of one cluster, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    /// Each item by its id.
    pub items: BTreeMap<ItemId, Item>,
}

impl Material {
    /// The item `kind` of `node` (`None`: cluster-wide).
    #[must_use]
    pub fn get(&self, node: Option<&str>, kind: Kind) -> Option<&Item> {
        self.items.get(&ItemId {
            node: node.map(str::to_owned),
            kind,
        })
    }

    /// The public view the renewal plan reads: certificates and public
    /// keys, and which items have a secret.
    #[must_use]
    pub fn existing(&self) -> Existing {
        Existing {
            public: self
                .items
                .iter()
                .filter_map(|(id, item)| item.public.clone().map(|p| (id.clone(), p)))
                .collect(),
            secrets: self.items.keys().cloned().collect(),
        }
    }
}

/// Why material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// rcgen refused (a SAN it cannot encode, a key it cannot read).
    #[error("cannot make {id}: {source}")]
    Generate {
        /// The item.
        id: ItemId,
        /// What rcgen said.
        #[source]
        source: rcgen::Error,
    },
    /// The system's random source failed.
    #[error("cannot make {id}: no randomness: {source}")]
    Random {
        /// The item.
        id: ItemId,
        /// What getrandom said.
        #[source]
        source: getrandom::Error,
    },
    /// A leaf's CA is neither kept nor issued.
    #[error("cannot sign {id}: its CA {authority} is missing")]
    MissingAuthority {
        /// The leaf.
        id: ItemId,
        /// The CA.
        authority: ItemId,
    },
    /// The plan keeps an item the material does not hold.
    #[error("the plan keeps {0}, but the material does not hold it")]
    MissingKept(ItemId),
    /// A CA certificate that cannot be read back.
    #[error("cannot read the CA {id}: {source}")]
    Authority {
        /// The CA.
        id: ItemId,
        /// Why.
        #[source]
        source: InspectError,
    },
    /// A time rcgen cannot encode.
    #[error("cannot make {0}: its validity lies outside what a certificate can hold")]
    Time(ItemId),
}

/// `material` changed as `plan` says, for `cluster`, at `now`: removed
/// items dropped, new and reissued ones made, everything else untouched.
///
/// # Errors
/// When a key cannot be made or a CA is missing; nothing is half-changed
/// then (the caller keeps its old material).
pub fn issue(
    cluster: &Cluster,
    plan: &[Change],
    mut material: Material,
    now: DateTime<Utc>,
) -> Result<Material, IssueError> {
    let actions: BTreeMap<&ItemId, &Action> = plan.iter().map(|c| (&c.id, &c.action)).collect();
    for change in plan {
        if change.action == Action::Remove {
            material.items.remove(&change.id);
        }
    }
    for item in desired(cluster) {
        match actions.get(&item.id) {
            Some(Action::Keep) => {
                if !material.items.contains_key(&item.id) {
                    return Err(IssueError::MissingKept(item.id));
                }
            }
            Some(Action::Remove) => {}
            // New, reissued, or left out of the plan: made now.
            Some(Action::Issue | Action::Reissue(_)) | None => {
                let made = make(&item.id, &item.form, &material, now)?;
                material.items.insert(item.id, made);
            }
        }
    }
    Ok(material)
}

/// A fresh item of `form`.
fn make(
    id: &ItemId,
    form: &Form,
    material: &Material,
    now: DateTime<Utc>,
) -> Result<Item, IssueError> {
    let generate = generation(id);
    match form {
        Form::Certificate(spec) => certificate(id, spec, material, now),
        Form::KeyPair => {
            let key = KeyPair::generate().map_err(generate)?;
            Ok(Item {
                public: Some(key.public_key_pem()),
                secret: Secret::new(key.serialize_pem()),
            })
        }
        Form::Random => {
            let bytes = random::<32>(id)?;
            let text = match id.kind {
                // EncryptionConfiguration wants the key base64-encoded.
                Kind::EncryptionKey => base64::engine::general_purpose::STANDARD.encode(*bytes),
                _ => hex::encode(*bytes),
            };
            Ok(Item {
                public: None,
                secret: Secret::new(text),
            })
        }
    }
}

/// A certificate for `spec`: self-signed for a CA, else signed by its CA in
/// `material` (and never outliving it).
fn certificate(
    id: &ItemId,
    spec: &CertificateSpec,
    material: &Material,
    now: DateTime<Utc>,
) -> Result<Item, IssueError> {
    let generate = generation(id);
    let key = KeyPair::generate().map_err(generate)?;
    let lifetime = if spec.usage == Usage::Authority {
        CA_LIFETIME
    } else {
        LEAF_LIFETIME
    };
    let mut params = CertificateParams::default();
    params.not_before = offset(id, now, BACKDATE, false)?;
    params.not_after = offset(id, now, lifetime, true)?;
    params.serial_number = Some(SerialNumber::from_slice(&serial(id)?));
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, spec.common_name.as_str());
    if let Some(organization) = &spec.organization {
        name.push(DnType::OrganizationName, organization.as_str());
    }
    params.distinguished_name = name;
    for dns in &spec.dns_names {
        let dns = dns.clone().try_into().map_err(generate)?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    for ip in &spec.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    set_usage(&mut params, spec.usage);
    let Some(authority_kind) = spec.issuer else {
        let certificate = params.self_signed(&key).map_err(generate)?;
        return Ok(Item {
            public: Some(certificate.pem()),
            secret: Secret::new(key.serialize_pem()),
        });
    };
    let authority_id = ItemId::cluster(authority_kind);
    let authority = material
        .items
        .get(&authority_id)
        .and_then(|item| item.public.as_ref().map(|public| (public, &item.secret)));
    let Some((authority_pem, authority_key)) = authority else {
        return Err(IssueError::MissingAuthority {
            id: id.clone(),
            authority: authority_id,
        });
    };
    let authority_end = inspect(authority_pem)
        .map_err(|source| IssueError::Authority {
            id: authority_id.clone(),
            source,
        })?
        .not_after;
    let authority_end = time::OffsetDateTime::from_unix_timestamp(authority_end.timestamp())
        .map_err(|_| IssueError::Time(id.clone()))?;
    params.not_after = params.not_after.min(authority_end);
    params.use_authority_key_identifier_extension = true;
    let signing_key = KeyPair::from_pem(authority_key.expose()).map_err(generate)?;
    let issuer = Issuer::from_ca_cert_pem(authority_pem, signing_key).map_err(generate)?;
    let certificate = params.signed_by(&key, &issuer).map_err(generate)?;
    Ok(Item {
        public: Some(certificate.pem()),
        secret: Secret::new(key.serialize_pem()),
    })
}

/// What turns rcgen's refusal to make `id` into an [`IssueError`].
fn generation(id: &ItemId) -> impl Fn(rcgen::Error) -> IssueError + Copy + '_ {
    move |source| IssueError::Generate {
        id: id.clone(),
        source,
    }
}

/// Key usage and extended key usage for `usage`.
fn set_usage(params: &mut CertificateParams, usage: Usage) {
    if usage == Usage::Authority {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        return;
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if matches!(usage, Usage::Server | Usage::ServerAndClient) {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if matches!(usage, Usage::Client | Usage::ServerAndClient) {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
}

/// `now` moved by `by`, forwards or backwards, as rcgen's time type.
fn offset(
    id: &ItemId,
    now: DateTime<Utc>,
    by: Duration,
    forwards: bool,
) -> Result<time::OffsetDateTime, IssueError> {
    let seconds = i64::try_from(by.as_secs()).map_err(|_| IssueError::Time(id.clone()))?;
    let at = if forwards {
        now.timestamp().checked_add(seconds)
    } else {
        now.timestamp().checked_sub(seconds)
    };
    at.and_then(|at| time::OffsetDateTime::from_unix_timestamp(at).ok())
        .ok_or_else(|| IssueError::Time(id.clone()))
}

/// A random positive 16-byte serial number.
fn serial(id: &ItemId) -> Result<[u8; 16], IssueError> {
    let mut bytes = *random::<16>(id)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(bytes)
}

/// `N` random bytes, zeroed when dropped.
fn random<const N: usize>(id: &ItemId) -> Result<zeroize::Zeroizing<[u8; N]>, IssueError> {
    let mut bytes = zeroize::Zeroizing::new([0u8; N]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|source| IssueError::Random {
        id: id.clone(),
        source,
    })?;
    Ok(bytes)
}
