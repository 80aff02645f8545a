//! Checks and conversion of `[secrets.NAME]`.

use std::collections::BTreeMap;
use std::path::Path;

use prov_provider::Address;

use super::check::valid_name;
use super::error::{Diagnostic, ErrorKind};
use super::raw::{RawSpec, Str};
use super::raw_secrets::RawSecret;
use super::secrets::{SecretSpec, UploadWhen, HOSTS_RECIPIENT};
use crate::select::Selection;

/// Set by `prov secrets …`: a secret's file may not exist yet (`encrypt`
/// and `edit` create it).
static ALLOW_MISSING_FILES: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Lets specs whose secret files do not exist yet load (for `prov secrets`).
pub fn allow_missing_secret_files() {
    ALLOW_MISSING_FILES.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Where secrets go when `destination` is not given.
pub(crate) const DEFAULT_KEY_DIR: &str = "/run/keys";

/// Checks every `[secrets.NAME]`; returns the valid ones by name.
pub(crate) fn check_secrets(
    raw: &RawSpec,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, SecretSpec> {
    let mut out = BTreeMap::new();
    let hosts = host_addresses(raw);
    // (destination, secret, hosts it goes to) of the secrets seen so far.
    let mut destinations: Vec<(String, String, Vec<Address>)> = Vec::new();
    for (name, secret) in &raw.secrets {
        let before = diags.len();
        if !valid_name(name.get_ref()) {
            diags.push(
                Diagnostic::new(
                    ErrorKind::InvalidName,
                    format!("`{}` is not a valid secret name", name.get_ref()),
                    name.span(),
                )
                .help("names start with an ASCII letter, followed by letters, digits, `-` or `_` (at most 64 characters)"),
            );
        }
        if let Some(spec) = check_one(name, secret, base_dir, &hosts, diags) {
            let targets = secret_hosts(&spec, &hosts);
            let shared = destinations.iter().find(|(destination, _, other)| {
                *destination == spec.destination && other.iter().any(|a| targets.contains(a))
            });
            if let Some((destination, other, other_hosts)) = shared {
                let host = other_hosts.iter().find(|a| targets.contains(a));
                let span = secret
                    .destination
                    .as_ref()
                    .map_or(name.span(), |d| d.span());
                diags.push(
                    Diagnostic::new(
                        ErrorKind::DuplicateEntry,
                        format!(
                            "secret `{}` and secret `{other}` both go to {destination} on {}",
                            name.get_ref(),
                            host.map(ToString::to_string).unwrap_or_default()
                        ),
                        span,
                    )
                    .help("give each secret its own destination (one would overwrite the other)"),
                );
            }
            destinations.push((spec.destination.clone(), name.get_ref().clone(), targets));
            if diags.len() == before {
                out.insert(name.get_ref().clone(), spec);
            }
        }
    }
    out
}

/// The hosts `secret` goes to.
fn secret_hosts(
    secret: &SecretSpec,
    hosts: &[(Address, BTreeMap<String, String>)],
) -> Vec<Address> {
    let Ok(selection) = Selection::parse(&secret.hosts) else {
        return Vec::new();
    };
    hosts
        .iter()
        .filter(|(a, tags)| !selection.is_all() && selection.matches(a, tags))
        .map(|(a, _)| a.clone())
        .collect()
}

/// Every host address with its user tags.
fn host_addresses(raw: &RawSpec) -> Vec<(Address, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for (name, host) in &raw.hosts {
        let tags: BTreeMap<String, String> = host
            .tags
            .iter()
            .map(|(k, v)| (k.get_ref().clone(), v.clone()))
            .collect();
        match host.count.as_ref().map(|c| *c.get_ref()) {
            None => out.push((Address::host(name.get_ref(), None), tags)),
            Some(count) => {
                for i in 0..u32::try_from(count.clamp(0, 1000)).unwrap_or(0) {
                    out.push((Address::host(name.get_ref(), Some(i)), tags.clone()));
                }
            }
        }
    }
    out
}

fn check_one(
    name: &Str,
    secret: &RawSecret,
    base_dir: &Path,
    hosts: &[(Address, BTreeMap<String, String>)],
    diags: &mut Vec<Diagnostic>,
) -> Option<SecretSpec> {
    let secret_name = name.get_ref();
    let file = base_dir.join(secret.file.get_ref());
    if secret.file.get_ref().trim().is_empty() {
        diags.push(Diagnostic::new(
            ErrorKind::InvalidValue,
            "`file` is empty",
            secret.file.span(),
        ));
    } else if !file.is_file() && !ALLOW_MISSING_FILES.load(std::sync::atomic::Ordering::Relaxed) {
        diags.push(
            Diagnostic::new(
                ErrorKind::File,
                format!(
                    "secret `{secret_name}`: {} does not exist",
                    file.display()
                ),
                secret.file.span(),
            )
            .help(format!(
                "create it with `prov secrets encrypt {secret_name} < PLAINTEXT` (paths are relative to the spec's directory)"
            )),
        );
    }

    let destination = match &secret.destination {
        None => format!("{DEFAULT_KEY_DIR}/{secret_name}"),
        Some(d) => {
            let value = d.get_ref();
            let bad = !value.starts_with('/')
                || value.ends_with('/')
                || value.contains(['\n', '\0'])
                || value.split('/').any(|part| part == "..");
            if bad {
                diags.push(
                    Diagnostic::new(
                        ErrorKind::InvalidValue,
                        format!("destination `{value}` is not an absolute file path"),
                        d.span(),
                    )
                    .help("e.g. `destination = \"/run/keys/db-password\"`"),
                );
            }
            value.clone()
        }
    };

    let account = |field: &str, value: Option<&Str>, diags: &mut Vec<Diagnostic>| -> String {
        let Some(v) = value else {
            return "root".to_owned();
        };
        let text = v.get_ref();
        let ok = !text.is_empty()
            && text.len() <= 32
            && !text.starts_with('-')
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            diags.push(
                Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!("{field} `{text}` is not a valid user or group name"),
                    v.span(),
                )
                .help("letters, digits, `_`, `-` and `.`; a name or a number"),
            );
        }
        text.clone()
    };
    let owner = account("owner", secret.owner.as_ref(), diags);
    let group = account("group", secret.group.as_ref(), diags);

    let mode = match &secret.mode {
        None => 0o400,
        Some(m) => match parse_mode(m.get_ref()) {
            Some(mode) => mode,
            None => {
                diags.push(
                    Diagnostic::new(
                        ErrorKind::InvalidValue,
                        format!("mode `{}` is not an octal mode up to 0777", m.get_ref()),
                        m.span(),
                    )
                    .help("write it as a string of octal digits, e.g. `mode = \"0440\"`"),
                );
                0o400
            }
        },
    };

    let upload = match &secret.upload {
        None => UploadWhen::Before,
        Some(u) => match u.get_ref().as_str() {
            "before" => UploadWhen::Before,
            "after" => UploadWhen::After,
            other => {
                diags.push(
                    Diagnostic::new(
                        ErrorKind::InvalidValue,
                        format!("upload `{other}` is not `before` or `after`"),
                        u.span(),
                    )
                    .help("`before` uploads before activation (the default), `after` once the new system is confirmed"),
                );
                UploadWhen::Before
            }
        },
    };

    if secret.hosts.get_ref().is_empty() {
        diags.push(
            Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("secret `{secret_name}` goes to no host: `hosts` is empty"),
                secret.hosts.span(),
            )
            .help("list host names, globs or @tags, e.g. `hosts = [\"db\", \"@role=web\"]`"),
        );
    }
    for pattern in secret.hosts.get_ref() {
        match Selection::parse(std::slice::from_ref(pattern.get_ref())) {
            Err(e) => diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("{e:#}").replace("`--on ", "`"),
                pattern.span(),
            )),
            Ok(selection) => {
                let matched =
                    !selection.is_all() && hosts.iter().any(|(a, tags)| selection.matches(a, tags));
                if !matched {
                    diags.push(
                        Diagnostic::new(
                            ErrorKind::UndefinedReference,
                            format!("`{}` matches no host", pattern.get_ref()),
                            pattern.span(),
                        )
                        .help("name a [hosts.NAME], a glob over host names, or @tag / @key=value"),
                    );
                }
            }
        }
    }

    if secret.recipients.get_ref().is_empty() {
        diags.push(
            Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("secret `{secret_name}` has no recipients"),
                secret.recipients.span(),
            )
            .help(
                "list age public keys (`age1…`), SSH public keys (`ssh-ed25519 AAAA…`) or `@hosts`",
            ),
        );
    }
    for recipient in secret.recipients.get_ref() {
        let text = recipient.get_ref().trim();
        if text != HOSTS_RECIPIENT {
            if let Err(message) = crate::secrets::parse_recipient(text) {
                diags.push(
                    Diagnostic::new(ErrorKind::InvalidValue, message, recipient.span()).help(
                        "age X25519 keys (`age1…`), `ssh-ed25519 …`, `ssh-rsa …`, or `@hosts`",
                    ),
                );
            }
        }
    }

    Some(SecretSpec {
        file,
        destination,
        owner,
        group,
        mode,
        hosts: secret
            .hosts
            .get_ref()
            .iter()
            .map(|h| h.get_ref().trim().to_owned())
            .collect(),
        upload,
        recipients: secret
            .recipients
            .get_ref()
            .iter()
            .map(|r| r.get_ref().trim().to_owned())
            .collect(),
    })
}

/// `"0440"` → 0o440; `None` when not octal or above 0o777.
pub(crate) fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.trim();
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

/// Checks `[state] encrypt_to`: a non-empty list of age or SSH recipients.
pub(crate) fn check_encrypt_to(list: Option<&super::raw::StrList>, diags: &mut Vec<Diagnostic>) {
    let Some(list) = list else { return };
    if list.get_ref().is_empty() {
        diags.push(
            Diagnostic::new(
                ErrorKind::InvalidValue,
                "`encrypt_to` is empty",
                list.span(),
            )
            .help("list age public keys (`age1…`) or SSH public keys; remove the key to keep state unencrypted"),
        );
    }
    for recipient in list.get_ref() {
        if let Err(message) = crate::secrets::parse_recipient(recipient.get_ref().trim()) {
            diags.push(
                Diagnostic::new(ErrorKind::InvalidValue, message, recipient.span())
                    .help("age X25519 keys (`age1…`), `ssh-ed25519 …` or `ssh-rsa …` (`@hosts` is not allowed here)"),
            );
        }
    }
}

/// `[state] encrypt_to` as written (trimmed).
pub(crate) fn encrypt_to(raw: &RawSpec) -> Vec<String> {
    raw.state
        .as_ref()
        .and_then(|s| s.encrypt_to.as_ref())
        .map(|l| {
            l.get_ref()
                .iter()
                .map(|r| r.get_ref().trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
