//! Semantic checks of a parsed spec; reads the files it refers to. This
//! module holds the entry point and the checker's shared helpers; each
//! concern has its own submodule.

mod hosts;
mod relations;
mod resources;
mod settings;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use prov_provider::is_valid_name;

use super::check_deploy::{deploy_settings, HostParts};
use super::error::{Diagnostic, ErrorKind};
use super::host::DeploySettings;
use super::ingress::Rule;
use super::output::check_output;
use super::raw::{RawSpec, Str, Tags};

pub(crate) use settings::S3_BACKEND;

/// Longest name allowed.
pub(crate) const MAX_NAME_LEN: usize = 64;
/// Largest `count`.
pub(crate) const MAX_COUNT: i64 = 1000;
/// Kind name of key pairs (also their address kind).
pub(crate) const KEY_PAIR: &str = prov_provider_ec2::KEY_PAIR_KIND;
/// Kind name of security groups (also their address kind).
pub(crate) const SECURITY_GROUP: &str = prov_provider_ec2::SECURITY_GROUP_KIND;

/// What the checks learned that conversion needs.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// Public key text (trimmed) by key pair name.
    pub public_keys: BTreeMap<String, String>,
    /// User data by host name.
    pub user_data: BTreeMap<String, String>,
    /// Normalized, sorted ingress rules by security group name.
    pub rules: BTreeMap<String, Vec<Rule>>,
    /// Deploy parts (system, SSH, health) by host name.
    pub host_parts: BTreeMap<String, HostParts>,
    /// `[deploy]`.
    pub deploy: DeploySettings,
    /// `[secrets.NAME]` by name.
    pub secrets: BTreeMap<String, super::secrets::SecretSpec>,
    /// `[kubernetes.NAME]` and each host's part in a cluster.
    pub kubernetes: super::check_kube::Kubernetes,
    /// `[[moved]]`, in order.
    pub moved: Vec<super::moved::Move>,
    /// `[environments]`.
    pub environments: super::environments::EnvironmentSettings,
    /// `[cache]`.
    pub cache: Option<super::cache::CacheSettings>,
}

/// Checks `raw`, resolving files against `base_dir`; `source` is the text the
/// spans refer to.
pub(crate) fn check(
    raw: &RawSpec,
    source: &str,
    base_dir: &Path,
) -> Result<Checked, Vec<Diagnostic>> {
    let mut c = Checker {
        source,
        base_dir,
        diags: Vec::new(),
        out: Checked::default(),
    };
    c.deployment(&raw.deployment);
    c.settings(raw);
    c.out.deploy = deploy_settings(raw, base_dir, &mut c.diags);
    super::check_libvirt::check_settings(raw, &mut c.diags);
    c.out.secrets = super::check_secrets::check_secrets(raw, base_dir, &mut c.diags);
    for (name, kp) in &raw.key_pairs {
        c.name(name, "key pair");
        c.key_pair(name, kp);
    }
    for (name, sg) in &raw.security_groups {
        c.name(name, "security group");
        c.security_group(name, sg);
    }
    for (name, host) in &raw.hosts {
        c.name(name, "host");
        c.host(raw, name, host);
    }
    c.out.kubernetes = super::check_kube::check_kubernetes(raw, &c.out.host_parts, &mut c.diags);
    c.duplicate_names(raw);
    c.machine_names(raw);
    c.provider(raw);
    c.cycles(raw);
    for (name, value) in &raw.outputs {
        c.name(name, "output");
        c.diags.extend(check_output(raw, source, value));
    }
    c.out.moved = super::moved::check(raw, &mut c.diags);
    c.out.environments = super::environments::check(raw.environments.as_ref(), &mut c.diags);
    c.out.cache = super::cache::check(raw.cache.as_ref(), &mut c.diags);
    if c.diags.is_empty() {
        Ok(c.out)
    } else {
        Err(c.diags)
    }
}

/// `value` parsed as a `T`, or a diagnostic at it saying why not.
pub(crate) fn parse_at<T>(value: &Str, diags: &mut Vec<Diagnostic>) -> Option<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match value.get_ref().parse::<T>() {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                error.to_string(),
                value.span(),
            ));
            None
        }
    }
}

/// Whether `s` is a valid name, including the length limit.
pub(crate) fn valid_name(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN && is_valid_name(s)
}

const NAME_HELP: &str =
    "names start with an ASCII letter, followed by letters, digits, `-` or `_` (at most 64 characters)";

/// The state of one check: the source, what was found wrong and what was
/// learned.
struct Checker<'a> {
    source: &'a str,
    base_dir: &'a Path,
    diags: Vec<Diagnostic>,
    out: Checked,
}

impl Checker<'_> {
    fn push(
        &mut self,
        kind: ErrorKind,
        message: impl Into<String>,
        span: Range<usize>,
    ) -> &mut Diagnostic {
        self.diags.push(Diagnostic::new(kind, message, span));
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }

    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.source.len());
        self.source.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn deployment(&mut self, deployment: &Str) {
        let name = deployment.get_ref();
        if name.is_empty() {
            self.push(
                ErrorKind::InvalidValue,
                "the deployment name is empty",
                deployment.span(),
            )
            .help
            .push("give the deployment a name, e.g. `deployment = \"demo\"`".into());
        } else if !valid_name(name) {
            self.push(
                ErrorKind::InvalidName,
                format!("`{name}` is not a valid deployment name"),
                deployment.span(),
            )
            .help
            .push(NAME_HELP.into());
        }
    }

    fn name(&mut self, name: &Str, what: &str) {
        if !valid_name(name.get_ref()) {
            self.push(
                ErrorKind::InvalidName,
                format!("`{}` is not a valid {what} name", name.get_ref()),
                name.span(),
            )
            .help
            .push(NAME_HELP.into());
        }
    }

    fn non_empty(&mut self, value: Option<&Str>, field: &str) {
        if let Some(v) = value.filter(|v| v.get_ref().trim().is_empty()) {
            self.push(
                ErrorKind::InvalidValue,
                format!("`{field}` is empty"),
                v.span(),
            );
        }
    }

    fn tags(&mut self, tags: &Tags) {
        for key in tags.keys() {
            let k = key.get_ref();
            let lower = k.to_ascii_lowercase();
            if lower.starts_with("prov:") {
                self.push(
                    ErrorKind::ReservedTag,
                    format!("tag key `{k}` is reserved: prov manages `prov:` tags itself"),
                    key.span(),
                );
            } else if lower.starts_with("aws:") {
                self.push(
                    ErrorKind::ReservedTag,
                    format!("tag key `{k}` is reserved: AWS does not allow `aws:` tags"),
                    key.span(),
                );
            } else if k.trim().is_empty() {
                self.push(ErrorKind::InvalidValue, "tag key is empty", key.span());
            }
        }
    }

    /// Exactly one (`required`) or at most one of two alternatives.
    fn one_of<'v>(
        &mut self,
        owner: (&str, &Str),
        a: (&str, Option<&'v Str>),
        b: (&str, Option<&'v Str>),
        required: bool,
    ) -> Option<(bool, &'v Str)> {
        match (a.1, b.1) {
            (Some(x), Some(y)) => {
                let later = if x.span().start > y.span().start {
                    x
                } else {
                    y
                };
                self.push(
                    ErrorKind::Conflict,
                    format!(
                        "{} `{}` sets both `{}` and `{}`",
                        owner.0,
                        owner.1.get_ref(),
                        a.0,
                        b.0
                    ),
                    later.span(),
                )
                .help
                .push(format!("keep only one of `{}` and `{}`", a.0, b.0));
                None
            }
            (Some(x), None) => Some((false, x)),
            (None, Some(y)) => Some((true, y)),
            (None, None) => {
                if required {
                    self.push(
                        ErrorKind::MissingField,
                        format!(
                            "{} `{}` needs `{}` or `{}`",
                            owner.0,
                            owner.1.get_ref(),
                            a.0,
                            b.0
                        ),
                        owner.1.span(),
                    );
                }
                None
            }
        }
    }

    /// Reads a file the spec names, relative to the spec's directory.
    fn read_file(&mut self, value: &Str, what: &str) -> Option<String> {
        let path = self.base_dir.join(value.get_ref());
        let problem = match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => return Some(text),
                Err(_) => "the file is not UTF-8".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        let shown = display_path(&path);
        self.push(
            ErrorKind::File,
            format!("cannot read {what} `{}`: {problem}", value.get_ref()),
            value.span(),
        )
        .help
        .push(format!(
            "relative paths are resolved against the spec's directory (looked for {shown})"
        ));
        None
    }
}

/// The names of a map's entries, sorted.
pub(crate) fn key_names<T>(map: &BTreeMap<Str, T>) -> Vec<&str> {
    map.keys().map(|k| k.get_ref().as_str()).collect()
}

/// A path for messages.
fn display_path(path: &Path) -> String {
    let shown: PathBuf = if path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        path.to_owned()
    };
    shown.display().to_string()
}
