//! What needs (re)issuing: the desired items of a cluster against the
//! existing material's public parts (certificates and public keys, plus
//! which secrets exist), at a given time. Pure: nothing is decrypted, so
//! `prov plan` can say what will change without an age identity.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::inspect::{inspect, is_signed_by, CertificateInfo};
use super::{desired, CertificateSpec, Form, ItemId};
use crate::kube::model::Cluster;

/// What exists already, without secrets: each item's certificate or public
/// key, and which items have their secret part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Certificates and public keys in PEM.
    pub public: BTreeMap<ItemId, String>,
    /// Items whose private key or secret exists.
    pub secrets: BTreeSet<ItemId>,
}

/// What happens to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// It stays, byte for byte.
    Keep,
    /// It is new.
    Issue,
    /// It is made again, for these reasons.
    Reissue(Vec<Reason>),
    /// The cluster no longer needs it.
    Remove,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keep => f.write_str("keep"),
            Self::Issue => f.write_str("new"),
            Self::Remove => f.write_str("remove"),
            Self::Reissue(reasons) => {
                f.write_str("reissue: ")?;
                for (i, reason) in reasons.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{reason}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why an item is reissued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The certificate exists, its private key does not.
    KeyMissing,
    /// The key exists, its certificate (or public key) does not.
    PublicMissing,
    /// The certificate cannot be read.
    Unreadable(String),
    /// CN or O differ.
    SubjectChanged {
        /// The subject as it is.
        from: String,
        /// The subject as it must be.
        to: String,
    },
    /// SANs differ.
    SansChanged {
        /// SANs the certificate lacks.
        added: Vec<String>,
        /// SANs it has and must not.
        removed: Vec<String>,
    },
    /// Key usages differ.
    UsageChanged,
    /// It expires within `renew_before` (or has expired).
    Expiring {
        /// Its end of validity.
        not_after: DateTime<Utc>,
        /// The cluster's renewal margin.
        renew_before: Duration,
        /// Whether that end has passed already.
        expired: bool,
    },
    /// Its CA is reissued, or it is not signed by the CA there is.
    AuthorityChanged,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyMissing => f.write_str("its private key is missing"),
            Self::PublicMissing => f.write_str("its certificate is missing"),
            Self::Unreadable(why) => write!(f, "unreadable ({why})"),
            Self::SubjectChanged { from, to } => write!(f, "subject changed: {from} → {to}"),
            Self::SansChanged { added, removed } => {
                f.write_str("SANs changed:")?;
                for san in added {
                    write!(f, " +{san}")?;
                }
                for san in removed {
                    write!(f, " -{san}")?;
                }
                Ok(())
            }
            Self::UsageChanged => f.write_str("key usages changed"),
            Self::Expiring {
                not_after,
                renew_before,
                expired,
            } => {
                let date = not_after.format("%Y-%m-%d");
                if *expired {
                    write!(f, "expired {date}")
                } else {
                    write!(
                        f,
                        "expires {date}, within renew_before {}",
                        human_duration(*renew_before)
                    )
                }
            }
            Self::AuthorityChanged => f.write_str("the CA changed"),
        }
    }
}

/// One item and what happens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The item.
    pub id: ItemId,
    /// What happens to it.
    pub action: Action,
}

/// What happens to every item of `cluster` given `existing` at `now`:
/// the desired items in order (CAs first), then the existing ones the
/// cluster no longer needs.
#[must_use]
pub fn plan(cluster: &Cluster, existing: &Existing, now: DateTime<Utc>) -> Vec<Change> {
    let desired = desired(cluster);
    let mut renewed_authorities = BTreeSet::new();
    let mut changes = Vec::new();
    for item in &desired {
        let public = existing.public.get(&item.id);
        let secret = existing.secrets.contains(&item.id);
        let action = match (&item.form, public, secret) {
            (Form::Random, _, true) => Action::Keep,
            (_, None, false) => Action::Issue,
            (Form::Random, _, false) => Action::Issue,
            (_, Some(_), false) => Action::Reissue(vec![Reason::KeyMissing]),
            (_, None, true) => Action::Reissue(vec![Reason::PublicMissing]),
            (Form::KeyPair, Some(_), true) => Action::Keep,
            (Form::Certificate(spec), Some(pem), true) => {
                let reasons = certificate_reasons(
                    spec,
                    pem,
                    existing,
                    &renewed_authorities,
                    cluster.renew_before,
                    now,
                );
                if reasons.is_empty() {
                    Action::Keep
                } else {
                    Action::Reissue(reasons)
                }
            }
        };
        if item.id.kind.is_ca() && action != Action::Keep {
            renewed_authorities.insert(item.id.clone());
        }
        changes.push(Change {
            id: item.id.clone(),
            action,
        });
    }
    let wanted: BTreeSet<&ItemId> = desired.iter().map(|d| &d.id).collect();
    let present: BTreeSet<&ItemId> = existing.public.keys().chain(&existing.secrets).collect();
    for id in present {
        if !wanted.contains(id) {
            changes.push(Change {
                id: id.clone(),
                action: Action::Remove,
            });
        }
    }
    changes
}

/// Why the certificate `pem` no longer matches `spec` (empty: it does).
fn certificate_reasons(
    spec: &CertificateSpec,
    pem: &str,
    existing: &Existing,
    renewed_authorities: &BTreeSet<ItemId>,
    renew_before: Duration,
    now: DateTime<Utc>,
) -> Vec<Reason> {
    let info = match inspect(pem) {
        Ok(info) => info,
        Err(error) => return vec![Reason::Unreadable(error.to_string())],
    };
    let mut reasons = Vec::new();
    let (from, to) = (subject_of(&info), subject_of_spec(spec));
    if from != to {
        reasons.push(Reason::SubjectChanged { from, to });
    }
    let have = sans_of(info.dns_names.iter().cloned(), info.ips.iter());
    let want = sans_of(spec.dns_names.iter().cloned(), spec.ips.iter());
    if have != want {
        reasons.push(Reason::SansChanged {
            added: want.difference(&have).cloned().collect(),
            removed: have.difference(&want).cloned().collect(),
        });
    }
    if info.usage != Some(spec.usage) {
        reasons.push(Reason::UsageChanged);
    }
    let renew_at = chrono::Duration::from_std(renew_before)
        .ok()
        .and_then(|margin| info.not_after.checked_sub_signed(margin));
    if renew_at.is_none_or(|at| at <= now) {
        reasons.push(Reason::Expiring {
            not_after: info.not_after,
            renew_before,
            expired: info.not_after <= now,
        });
    }
    if let Some(authority) = spec.issuer.map(ItemId::cluster) {
        let signed = existing
            .public
            .get(&authority)
            .is_some_and(|ca| is_signed_by(pem, ca).unwrap_or(false));
        if renewed_authorities.contains(&authority) || !signed {
            reasons.push(Reason::AuthorityChanged);
        }
    }
    reasons
}

/// `CN=…,O=…` of a certificate.
fn subject_of(info: &CertificateInfo) -> String {
    subject(info.common_name.as_deref(), info.organization.as_deref())
}

/// `CN=…,O=…` of a spec.
fn subject_of_spec(spec: &CertificateSpec) -> String {
    subject(Some(&spec.common_name), spec.organization.as_deref())
}

/// `CN=…` with `,O=…` when there is one.
fn subject(common_name: Option<&str>, organization: Option<&str>) -> String {
    let mut out = format!("CN={}", common_name.unwrap_or(""));
    if let Some(organization) = organization {
        out.push_str(",O=");
        out.push_str(organization);
    }
    out
}

/// DNS names and IPs as one set of strings.
fn sans_of<'a>(
    dns: impl Iterator<Item = String>,
    ips: impl Iterator<Item = &'a std::net::IpAddr>,
) -> BTreeSet<String> {
    dns.chain(ips.map(ToString::to_string)).collect()
}

/// `30d`, `12h`, `90m` or `45s`: the largest unit that divides evenly.
#[must_use]
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= size && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}
