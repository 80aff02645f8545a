//! Certificates read back (x509-parser): what the renewal plan compares and
//! what `prov k8s certs` shows. Public data only.

use std::collections::BTreeSet;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use super::Usage;

/// A certificate that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// Not PEM at all.
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    /// PEM, but not an X.509 certificate x509-parser understands.
    #[error("not an X.509 certificate: {0}")]
    Certificate(String),
}

/// What a certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject's CN.
    pub common_name: Option<String>,
    /// The subject's O.
    pub organization: Option<String>,
    /// The issuer's CN.
    pub issuer_common_name: Option<String>,
    /// DNS SANs.
    pub dns_names: BTreeSet<String>,
    /// IP SANs.
    pub ips: BTreeSet<IpAddr>,
    /// Valid from.
    pub not_before: DateTime<Utc>,
    /// Valid until.
    pub not_after: DateTime<Utc>,
    /// The serial number, in hex.
    pub serial: String,
    /// The key usages it allows, as [`Usage`] when they match one exactly.
    pub usage: Option<Usage>,
}

/// Parses one PEM certificate.
///
/// # Errors
/// When it is not PEM or not a certificate.
pub fn inspect(pem_text: &str) -> Result<CertificateInfo, InspectError> {
    let pem = read_pem(pem_text)?;
    let certificate = parse(&pem)?;
    Ok(describe(&certificate))
}

/// Whether `certificate` carries a valid signature by `authority`'s key.
///
/// # Errors
/// When either cannot be read.
pub fn is_signed_by(certificate: &str, authority: &str) -> Result<bool, InspectError> {
    let leaf_pem = read_pem(certificate)?;
    let authority_pem = read_pem(authority)?;
    let leaf = parse(&leaf_pem)?;
    let authority = parse(&authority_pem)?;
    Ok(leaf.issuer() == authority.subject()
        && leaf.verify_signature(Some(authority.public_key())).is_ok())
}

/// The first PEM block of `text`.
fn read_pem(text: &str) -> Result<Pem, InspectError> {
    x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map(|(_, pem)| pem)
        .map_err(|e| InspectError::Pem(e.to_string()))
}

/// The certificate inside `pem`.
fn parse(pem: &Pem) -> Result<X509Certificate<'_>, InspectError> {
    pem.parse_x509()
        .map_err(|e| InspectError::Certificate(e.to_string()))
}

/// The facts of a parsed certificate.
fn describe(certificate: &X509Certificate<'_>) -> CertificateInfo {
    let subject = certificate.subject();
    let mut dns_names = BTreeSet::new();
    let mut ips = BTreeSet::new();
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    dns_names.insert((*dns).to_owned());
                }
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        ips.insert(ip);
                    }
                }
                _ => {}
            }
        }
    }
    let validity = certificate.validity();
    CertificateInfo {
        common_name: first(subject.iter_common_name()),
        organization: first(subject.iter_organization()),
        issuer_common_name: first(certificate.issuer().iter_common_name()),
        dns_names,
        ips,
        not_before: time_of(validity.not_before.timestamp()),
        not_after: time_of(validity.not_after.timestamp()),
        serial: hex::encode(certificate.raw_serial()),
        usage: usage_of(certificate),
    }
}

/// The [`Usage`] a certificate's key usage and extended key usage match.
fn usage_of(certificate: &X509Certificate<'_>) -> Option<Usage> {
    let key_usage = certificate.key_usage().ok().flatten()?.value;
    let extended = certificate.extended_key_usage().ok().flatten();
    let (server, client) = extended.map_or((false, false), |e| {
        (e.value.server_auth, e.value.client_auth)
    });
    if certificate.is_ca() {
        return (key_usage.key_cert_sign() && key_usage.crl_sign() && !server && !client)
            .then_some(Usage::Authority);
    }
    if !(key_usage.digital_signature() && key_usage.key_encipherment()) {
        return None;
    }
    match (server, client) {
        (true, true) => Some(Usage::ServerAndClient),
        (true, false) => Some(Usage::Server),
        (false, true) => Some(Usage::Client),
        (false, false) => None,
    }
}

/// The first value of an attribute, as text.
fn first<'a>(
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Option<String> {
    values
        .next()
        .and_then(|value| value.as_str().ok())
        .map(str::to_owned)
}

/// An IP SAN's 4 or 16 bytes as an address.
fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Seconds since the epoch as a UTC time (the epoch for the impossible).
fn time_of(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}
