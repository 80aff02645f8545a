//! Semantic checks of a parsed spec; reads the files it refers to.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use prov_provider::is_valid_name;

use super::check_deploy::{deploy_settings, host_parts, HostParts};
use super::error::{Diagnostic, ErrorKind};
use super::graph::{find_cycles, Node};
use super::host::DeploySettings;
use super::ingress::{check_rule, Rule};
use super::output::check_output;
use super::raw::{RawHost, RawKeyPair, RawSecurityGroup, RawSpec, Str, StrList, Tags};
use crate::providers::Target;

/// Longest name allowed.
pub(crate) const MAX_NAME_LEN: usize = 64;
/// Largest `count`.
pub(crate) const MAX_COUNT: i64 = 1000;
/// EC2's limit on user data, in bytes.
const MAX_USER_DATA: usize = 16 * 1024;
/// Kind name of key pairs.
pub(crate) const KEY_PAIR: &str = "key_pair";
/// Kind name of security groups.
pub(crate) const SECURITY_GROUP: &str = "security_group";

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
    c.duplicate_names(raw);
    c.machine_names(raw);
    c.provider(raw);
    c.cycles(raw);
    for (name, value) in &raw.outputs {
        c.name(name, "output");
        c.diags.extend(check_output(raw, source, value));
    }
    if c.diags.is_empty() {
        Ok(c.out)
    } else {
        Err(c.diags)
    }
}

/// Whether `s` is a valid name, including the length limit.
pub(crate) fn valid_name(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN && is_valid_name(s)
}

const NAME_HELP: &str =
    "names start with an ASCII letter, followed by letters, digits, `-` or `_` (at most 64 characters)";

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

    fn settings(&mut self, raw: &RawSpec) {
        if let Some(state) = &raw.state {
            self.state(state);
        }
        if let Some(ec2) = &raw.providers.ec2 {
            self.non_empty(ec2.region.as_ref(), "region");
            self.non_empty(ec2.profile.as_ref(), "profile");
            if let Some(endpoint) = &ec2.endpoint {
                let url = endpoint.get_ref();
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                if rest.is_none_or(str::is_empty) {
                    self.push(
                        ErrorKind::InvalidValue,
                        format!("endpoint `{url}` is not an http:// or https:// URL"),
                        endpoint.span(),
                    )
                    .help
                    .push("e.g. `endpoint = \"http://127.0.0.1:5000\"`".into());
                }
            }
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

    fn key_pair(&mut self, name: &Str, kp: &RawKeyPair) {
        self.tags(&kp.tags);
        let chosen = self.one_of(
            ("key pair", name),
            ("public_key", kp.public_key.as_ref()),
            ("public_key_file", kp.public_key_file.as_ref()),
            true,
        );
        let Some((from_file, value)) = chosen else {
            return;
        };
        let text = if from_file {
            match self.read_file(value, "public key file") {
                Some(text) => text,
                None => return,
            }
        } else {
            value.get_ref().clone()
        };
        let key = text.trim();
        let looks_like_key = key.lines().count() == 1
            && ["ssh-", "ecdsa-"].iter().any(|p| key.starts_with(p))
            && key.split_whitespace().count() >= 2;
        if !looks_like_key {
            let origin = if from_file {
                "the file does not hold"
            } else {
                "this is not"
            };
            self.push(
                ErrorKind::InvalidValue,
                format!(
                    "key pair `{}`: {origin} an OpenSSH public key",
                    name.get_ref()
                ),
                value.span(),
            )
            .help
            .push("expected one line like `ssh-ed25519 AAAA… comment`".into());
            return;
        }
        self.out
            .public_keys
            .insert(name.get_ref().clone(), key.to_owned());
    }

    fn security_group(&mut self, name: &Str, sg: &RawSecurityGroup) {
        self.tags(&sg.tags);
        self.non_empty(sg.description.as_ref(), "description");
        self.non_empty(sg.vpc_id.as_ref(), "vpc_id");
        let mut rules: Vec<(Rule, usize)> = Vec::new();
        for raw_rule in &sg.ingress {
            let Some(rule) = check_rule(raw_rule, &mut self.diags) else {
                continue;
            };
            let start = raw_rule.span().start;
            if let Some((_, (cidr, line))) = rules
                .iter()
                .find_map(|(r, line)| r.overlaps(&rule).map(|c| (r, (c.to_owned(), *line))))
            {
                self.push(
                    ErrorKind::DuplicateEntry,
                    format!(
                        "duplicate ingress rule in security group `{}`: {} from {cidr} is already allowed",
                        name.get_ref(),
                        rule.describe()
                    ),
                    raw_rule.span(),
                )
                .help
                .push(format!("the same permission is granted by the rule at line {line}; EC2 rejects duplicates"));
                continue;
            }
            rules.push((rule, self.line_of(start)));
        }
        let mut rules: Vec<Rule> = rules.into_iter().map(|(r, _)| r).collect();
        rules.sort();
        self.out.rules.insert(name.get_ref().clone(), rules);
    }

    /// Duplicate entries in a list of names.
    fn unique_entries(&mut self, list: &StrList, field: &str) {
        let mut seen = BTreeSet::new();
        for entry in list.get_ref() {
            if !seen.insert(entry.get_ref()) {
                self.push(
                    ErrorKind::DuplicateEntry,
                    format!("`{}` is listed twice in {field}", entry.get_ref()),
                    entry.span(),
                );
            }
        }
    }

    fn reference<T>(
        &mut self,
        entry: &Str,
        defined: &BTreeMap<Str, T>,
        what: (&str, &str),
        host: &Str,
    ) {
        if defined.contains_key(entry.get_ref().as_str()) {
            return;
        }
        let names = key_names(defined);
        let help = if names.is_empty() {
            format!("no {} are defined", what.1)
        } else {
            format!("defined {}: {}", what.1, names.join(", "))
        };
        self.push(
            ErrorKind::UndefinedReference,
            format!(
                "host `{}` refers to {} `{}`, which is not defined",
                host.get_ref(),
                what.0,
                entry.get_ref()
            ),
            entry.span(),
        )
        .help
        .push(help);
    }

    fn host(&mut self, raw: &RawSpec, name: &Str, host: &RawHost) {
        let target = host.target.get_ref();
        if host.target().is_none() {
            self.push(
                ErrorKind::UnsupportedTarget,
                format!(
                    "host `{}` has unsupported target `{target}`",
                    name.get_ref()
                ),
                host.target.span(),
            )
            .help
            .push(format!("supported targets: {}", Target::names().join(", ")));
        } else if host.target() == Some(Target::Ec2) {
            for (field, value) in [("ami", &host.ami), ("instance_type", &host.instance_type)] {
                if value.is_none() {
                    self.push(
                        ErrorKind::MissingField,
                        format!(
                            "host `{}` needs `{field}` (target {target})",
                            name.get_ref()
                        ),
                        name.span(),
                    );
                }
            }
        }
        self.non_empty(host.ami.as_ref(), "ami");
        self.non_empty(host.instance_type.as_ref(), "instance_type");
        self.non_empty(host.subnet.as_ref(), "subnet");
        if let Some(count) = &host.count {
            let n = *count.get_ref();
            if n < 0 {
                self.push(
                    ErrorKind::InvalidValue,
                    format!("count must not be negative (got {n})"),
                    count.span(),
                );
            } else if n > MAX_COUNT {
                self.push(
                    ErrorKind::InvalidValue,
                    format!("count {n} exceeds the limit of {MAX_COUNT}"),
                    count.span(),
                );
            }
        }
        self.tags(&host.tags);
        if let Some(kp) = &host.key_pair {
            self.reference(kp, &raw.key_pairs, ("key pair", "key pairs"), name);
        }
        if let Some(list) = &host.security_groups {
            self.unique_entries(list, "security_groups");
            for sg in list.get_ref() {
                self.reference(
                    sg,
                    &raw.security_groups,
                    ("security group", "security groups"),
                    name,
                );
            }
        }
        if let Some(list) = &host.depends_on {
            self.unique_entries(list, "depends_on");
            for dep in list.get_ref() {
                self.reference(dep, &raw.hosts, ("host", "hosts"), name);
            }
        }
        self.user_data(name, host);
        super::check_virtualbox::check_host(name, host, &mut self.diags);
        super::check_libvirt::check_host(raw, name, host, self.base_dir, &mut self.diags);
        let parts = host_parts(name, host, self.base_dir, &mut self.diags);
        self.out.host_parts.insert(name.get_ref().clone(), parts);
    }

    fn user_data(&mut self, name: &Str, host: &RawHost) {
        let chosen = self.one_of(
            ("host", name),
            ("user_data", host.user_data.as_ref()),
            ("user_data_file", host.user_data_file.as_ref()),
            false,
        );
        let Some((from_file, value)) = chosen else {
            return;
        };
        let text = if from_file {
            match self.read_file(value, "user data file") {
                Some(text) => text,
                None => return,
            }
        } else {
            value.get_ref().clone()
        };
        if text.len() > MAX_USER_DATA {
            self.push(
                ErrorKind::InvalidValue,
                format!(
                    "user data of host `{}` is {} bytes; EC2 allows at most {MAX_USER_DATA}",
                    name.get_ref(),
                    text.len()
                ),
                value.span(),
            );
            return;
        }
        self.out.user_data.insert(name.get_ref().clone(), text);
    }

    /// A host may not share its name with a key pair: `NAME` would be
    /// ambiguous for selection and in messages. (A security group named like
    /// the hosts it serves, `[security_groups.web]` for `[hosts.web]`, is the
    /// common idiom and stays allowed.)
    fn duplicate_names(&mut self, raw: &RawSpec) {
        for name in raw.hosts.keys() {
            let Some((other, _)) = raw.key_pairs.get_key_value(name.get_ref().as_str()) else {
                continue;
            };
            let line = self.line_of(other.span().start);
            self.push(
                ErrorKind::DuplicateName,
                format!("host `{}` has the same name as a key pair", name.get_ref()),
                name.span(),
            )
            .help
            .push(format!(
                "key pair `{}` is defined at line {line}; hosts and key pairs need distinct names",
                other.get_ref()
            ));
        }
    }

    /// A counted host's machines are named `NAME-I` (VM names, local host
    /// directories, hostnames), so `[hosts.web] count = 2` and a host named
    /// `web-1` would be one machine. Each such host is an error at its name.
    fn machine_names(&mut self, raw: &RawSpec) {
        for (name, host) in &raw.hosts {
            let count = host.count.as_ref().map_or(0, |c| *c.get_ref());
            for i in 0..count.clamp(0, MAX_COUNT) {
                let machine = format!("{}-{i}", name.get_ref());
                let Some((other, _)) = raw.hosts.get_key_value(machine.as_str()) else {
                    continue;
                };
                let line = self.line_of(name.span().start);
                self.push(
                    ErrorKind::DuplicateName,
                    format!(
                        "host `{machine}` has the machine name of `{}[{i}]`",
                        name.get_ref()
                    ),
                    other.span(),
                )
                .help
                .push(format!(
                    "`[hosts.{}]` (line {line}) has count = {count}, so its machine {i} is named `{machine}` too (VM name, host directory, hostname); rename one of them",
                    name.get_ref()
                ));
            }
        }
    }

    /// Every resource is an EC2 resource so far: `[providers.ec2]` must exist
    /// if there is any.
    fn provider(&mut self, raw: &RawSpec) {
        if raw.providers.ec2.is_some() {
            return;
        }
        let first_host = raw
            .hosts
            .iter()
            .filter(|(_, h)| h.target() == Some(Target::Ec2))
            .min_by_key(|(_, h)| h.target.span().start);
        let ec2 = Target::Ec2;
        let (message, span) = if let Some((name, host)) = first_host {
            (
                format!(
                    "host `{}` uses target `{ec2}`, but [providers.{ec2}] is not configured",
                    name.get_ref()
                ),
                host.target.span(),
            )
        } else {
            let first = raw
                .key_pairs
                .keys()
                .map(|k| ("key pair", k))
                .chain(raw.security_groups.keys().map(|k| ("security group", k)))
                .min_by_key(|(_, k)| k.span().start);
            let Some((what, name)) = first else {
                return;
            };
            (
                format!(
                    "{what} `{}` is an EC2 resource, but [providers.{ec2}] is not configured",
                    name.get_ref()
                ),
                name.span(),
            )
        };
        self.push(ErrorKind::MissingProvider, message, span)
            .help
            .push(format!("add a `[providers.{ec2}]` table (it may be empty: region and credentials then come from the environment)"));
    }

    fn cycles(&mut self, raw: &RawSpec) {
        let mut hosts: Vec<(&Str, &RawHost)> = raw.hosts.iter().collect();
        hosts.sort_by_key(|(name, _)| name.span().start);
        let nodes: Vec<Node<'_>> = hosts
            .iter()
            .map(|(name, host)| {
                let edges = host
                    .depends_on
                    .iter()
                    .flat_map(|l| l.get_ref())
                    .map(|d| (d.get_ref().as_str(), d.span()))
                    .collect();
                (name.get_ref().as_str(), edges)
            })
            .collect();
        for cycle in find_cycles(&nodes) {
            self.push(
                ErrorKind::Cycle,
                format!("dependency cycle: {}", cycle.describe()),
                cycle.closing.clone(),
            )
            .help
            .push("remove one of these depends_on entries".into());
        }
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

/// `[state] backend` value of the S3 backend.
pub(crate) const S3_BACKEND: &str = "s3";
/// `[state] backend` value of the embedded backend (the default).
const EMBEDDED_BACKEND: &str = "embedded";

impl Checker<'_> {
    /// `[state]`: the backend, and only the keys that backend takes.
    fn state(&mut self, state: &super::raw::RawState) {
        self.non_empty(state.path.as_ref(), "path");
        super::check_secrets::check_encrypt_to(state.encrypt_to.as_ref(), &mut self.diags);
        if let Some(keep) = &state.keep_versions {
            if *keep.get_ref() < 1 {
                self.push(
                    ErrorKind::InvalidValue,
                    format!(
                        "keep_versions must be at least 1 (got {}): it is how many of the newest state versions history keeps",
                        keep.get_ref()
                    ),
                    keep.span(),
                )
                .help
                .push("remove `keep_versions` to keep every version".into());
            }
        }
        let s3_keys = [
            ("bucket", &state.bucket),
            ("key", &state.key),
            ("region", &state.region),
            ("endpoint", &state.endpoint),
            ("profile", &state.profile),
            ("workspace", &state.workspace),
        ];
        for (field, value) in s3_keys {
            self.non_empty(value.as_ref(), field);
        }
        let backend = state.backend.as_ref();
        match backend.map(|b| b.get_ref().as_str()) {
            None | Some(EMBEDDED_BACKEND) => {
                for (field, value) in s3_keys {
                    if let Some(v) = value {
                        self.push(
                            ErrorKind::Conflict,
                            format!("`{field}` in [state] needs `backend = \"s3\"`"),
                            v.span(),
                        )
                        .help
                        .push("the embedded backend (the default) takes only `path`".into());
                    }
                }
            }
            Some(S3_BACKEND) => {
                let Some(backend) = backend else { return };
                if let Some(path) = &state.path {
                    self.push(
                        ErrorKind::Conflict,
                        "`path` is for the embedded backend, but [state] has `backend = \"s3\"`",
                        path.span(),
                    )
                    .help
                    .push("S3 state lives at `bucket` and `key`; remove `path`".into());
                }
                match &state.bucket {
                    None => {
                        self.push(
                            ErrorKind::MissingField,
                            "[state] `backend = \"s3\"` needs `bucket`",
                            backend.span(),
                        )
                        .help
                        .push(
                            "e.g. `bucket = \"my-team-prov-state\"` (the bucket must exist)".into(),
                        );
                    }
                    Some(bucket) if !bucket.get_ref().trim().is_empty() => {
                        if let Err(message) = prov_state::S3Settings::check_bucket(bucket.get_ref())
                        {
                            self.push(ErrorKind::InvalidValue, message, bucket.span());
                        }
                    }
                    Some(_) => {}
                }
                if let Some(key) = state
                    .key
                    .as_ref()
                    .filter(|k| !k.get_ref().trim().is_empty())
                {
                    if let Err(message) = prov_state::S3Settings::check_key(key.get_ref()) {
                        self.push(ErrorKind::InvalidValue, message, key.span());
                    }
                }
                if let Some(workspace) = &state.workspace {
                    self.name(workspace, "workspace");
                }
                if let Some(endpoint) = &state.endpoint {
                    let url = endpoint.get_ref();
                    let rest = url
                        .strip_prefix("http://")
                        .or_else(|| url.strip_prefix("https://"));
                    if rest.is_none_or(str::is_empty) {
                        self.push(
                            ErrorKind::InvalidValue,
                            format!("endpoint `{url}` is not an http:// or https:// URL"),
                            endpoint.span(),
                        )
                        .help
                        .push("e.g. `endpoint = \"http://127.0.0.1:5000\"`".into());
                    }
                }
            }
            Some(other) => {
                let Some(backend) = backend else { return };
                self.push(
                    ErrorKind::InvalidValue,
                    format!("unknown state backend `{other}`"),
                    backend.span(),
                )
                .help
                .push("use `backend = \"embedded\"` (the default) or `backend = \"s3\"`".into());
            }
        }
    }
}
