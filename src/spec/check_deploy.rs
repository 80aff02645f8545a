//! Checks and conversion of the deploy parts of a host (system, goal, SSH,
//! health) and of `[deploy]`.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::{Diagnostic, ErrorKind};
use super::host::{
    BuildOn, DeploySettings, DeploySpec, Goal, HealthSpec, JumpSpec, OnFailure, SshSpec,
    SystemSource,
};
use super::raw::{RawHost, RawSpec, Str};
use crate::providers::Target;

/// Default seconds to wait for confirmation before a host rolls back.
const DEFAULT_CONFIRM_TIMEOUT: i64 = 30;
/// The shortest confirmation window accepted: the window opens when
/// activation has ended on the host, and prov needs one new SSH connection
/// (handshake, authentication, one command) inside it.
const MIN_CONFIRM_TIMEOUT: i64 = 3;

/// The deploy-related parts of one host, checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostParts {
    /// The system to deploy, if any.
    pub deploy: Option<DeploySpec>,
    /// SSH overrides.
    pub ssh: SshSpec,
    /// Health checks.
    pub health: Option<HealthSpec>,
    /// Pinned host key.
    pub host_key: Option<String>,
}

/// Checks the deploy parts of host `name`; pushes problems to `diags`.
pub(crate) fn host_parts(
    name: &Str,
    host: &RawHost,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> HostParts {
    let target = host.target.get_ref().as_str();
    let mut parts = HostParts::default();
    let host_name = name.get_ref();

    // Fields that belong to EC2 only.
    if host.target() != Some(Target::Ec2) {
        let ec2_only: [(&str, Option<std::ops::Range<usize>>); 7] = [
            ("ami", host.ami.as_ref().map(Spanned::span)),
            (
                "instance_type",
                host.instance_type.as_ref().map(Spanned::span),
            ),
            ("subnet", host.subnet.as_ref().map(Spanned::span)),
            ("key_pair", host.key_pair.as_ref().map(Spanned::span)),
            (
                "security_groups",
                host.security_groups.as_ref().map(Spanned::span),
            ),
            ("user_data", host.user_data.as_ref().map(Spanned::span)),
            (
                "user_data_file",
                host.user_data_file.as_ref().map(Spanned::span),
            ),
        ];
        for (field, span) in ec2_only {
            if let Some(span) = span {
                diags.push(Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!("`{field}` applies to target `{}` only; host `{host_name}` has target `{target}`", Target::Ec2),
                    span,
                ));
            }
        }
    }
    if let Some(address) = &host.address {
        if host.target() != Some(Target::Local) {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("`address` applies to target `{}` only; for other targets set [hosts.{host_name}.ssh] address", Target::Local),
                address.span(),
            ));
        } else if !is_loopback(address.get_ref()) {
            diags.push(
                Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!(
                        "`{}` is not a 127.x.y.z loopback address",
                        address.get_ref()
                    ),
                    address.span(),
                )
                .help("local hosts listen on their own loopback address, e.g. 127.0.0.10"),
            );
        } else if host.count.as_ref().is_some_and(|c| *c.get_ref() > 1) {
            diags.push(Diagnostic::new(
                ErrorKind::Conflict,
                "a fixed `address` cannot be shared by several hosts (count > 1)",
                address.span(),
            ));
        }
    }

    parts.deploy = deploy_spec(host, base_dir, diags);
    parts.ssh = ssh_spec(host, base_dir, diags);
    if host.target() == Some(Target::Ssh) && parts.ssh.address.is_none() {
        diags.push(
            Diagnostic::new(
                ErrorKind::MissingField,
                format!("host `{host_name}` has target `{target}` but no address"),
                host.target.span(),
            )
            .help(format!("add [hosts.{host_name}.ssh] with address = \"…\"")),
        );
    }
    parts.health = health_spec(host, diags);
    if let Some(key) = &host.host_key {
        if check_public_key(key, diags) {
            parts.host_key = Some(normalize_key(key.get_ref()));
        }
    }
    parts
}

fn deploy_spec(host: &RawHost, base_dir: &Path, diags: &mut Vec<Diagnostic>) -> Option<DeploySpec> {
    let mut sources = Vec::new();
    if let Some(system) = &host.system {
        if system.get_ref().starts_with("/nix/store/") {
            sources.push((
                system.span(),
                SystemSource::StorePath(system.get_ref().clone()),
            ));
        } else {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("`{}` is not a store path (/nix/store/…)", system.get_ref()),
                system.span(),
            ));
        }
    }
    if let Some(nix) = &host.nix {
        let file = nix.get_ref().file.get_ref();
        let path = base_dir.join(file);
        if path.exists() {
            let attr = nix.get_ref().attr.as_ref().map(|a| a.get_ref().clone());
            sources.push((nix.span(), SystemSource::Nix { file: path, attr }));
        } else {
            diags.push(Diagnostic::new(
                ErrorKind::File,
                format!("Nix file `{}` does not exist", path.display()),
                nix.get_ref().file.span(),
            ));
        }
    }
    if let Some(flake) = &host.flake {
        if flake.get_ref().contains('#') {
            sources.push((flake.span(), SystemSource::Flake(flake.get_ref().clone())));
        } else {
            diags.push(
                Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!("flake reference `{}` names no output", flake.get_ref()),
                    flake.span(),
                )
                .help("write FLAKE#OUTPUT, e.g. .#nixosConfigurations.web.config.system.build.toplevel"),
            );
        }
    }
    if sources.len() > 1 {
        diags.push(Diagnostic::new(
            ErrorKind::Conflict,
            "give the system one way only: `system`, `nix` or `flake`",
            sources[1].0.clone(),
        ));
    }
    let deploy_keys_without_system = [
        host.goal.as_ref().map(Spanned::span),
        host.build_on.as_ref().map(Spanned::span),
        host.confirm_timeout.as_ref().map(Spanned::span),
    ];
    let goal = match &host.goal {
        None => Goal::Switch,
        Some(g) => Goal::parse(g.get_ref()).unwrap_or_else(|| {
            diags.push(
                Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!("unknown goal `{}`", g.get_ref()),
                    g.span(),
                )
                .help("goals: switch, boot, test, dry-activate"),
            );
            Goal::Switch
        }),
    };
    let build_on = match host
        .build_on
        .as_ref()
        .map(|b| (b.get_ref().as_str(), b.span()))
    {
        None | Some(("local", _)) => BuildOn::Local,
        Some(("target", _)) => BuildOn::Target,
        Some((other, span)) => {
            diags.push(
                Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!("unknown build_on `{other}`"),
                    span,
                )
                .help("build_on is `local` or `target`"),
            );
            BuildOn::Local
        }
    };
    let confirm = host
        .confirm_timeout
        .as_ref()
        .map_or(DEFAULT_CONFIRM_TIMEOUT, |c| *c.get_ref());
    if let Some(c) = &host.confirm_timeout {
        if !(0..=3600).contains(c.get_ref()) {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!(
                    "confirm_timeout {} is out of range (0 to 3600 seconds; 0 disables rollback)",
                    c.get_ref()
                ),
                c.span(),
            ));
        } else if (1..MIN_CONFIRM_TIMEOUT).contains(c.get_ref()) {
            diags.push(
                Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!(
                        "confirm_timeout {} is too short to confirm in: prov opens a new SSH connection inside the window",
                        c.get_ref()
                    ),
                    c.span(),
                )
                .help(format!(
                    "use at least {MIN_CONFIRM_TIMEOUT} seconds, or 0 to activate without confirmation and rollback"
                )),
            );
        }
    }
    let Some((_, system)) = sources.into_iter().next() else {
        if let Some(span) = deploy_keys_without_system.into_iter().flatten().next() {
            diags.push(
                Diagnostic::new(
                    ErrorKind::MissingField,
                    "deploy settings without a system",
                    span,
                )
                .help("set `system`, `nix` or `flake` for this host"),
            );
        }
        return None;
    };
    Some(DeploySpec {
        system,
        goal,
        build_on,
        substitute_on_destination: host.substitute_on_destination.unwrap_or(false),
        confirm_timeout: Duration::from_secs(u64::try_from(confirm.clamp(0, 3600)).unwrap_or(30)),
    })
}

fn ssh_spec(host: &RawHost, base_dir: &Path, diags: &mut Vec<Diagnostic>) -> SshSpec {
    let Some(ssh) = &host.ssh else {
        return SshSpec::default();
    };
    let jump = ssh.jump.as_ref().map(|j| JumpSpec {
        address: j.address.get_ref().clone(),
        port: port(j.port.as_ref(), diags).unwrap_or(22),
        user: j
            .user
            .as_ref()
            .map_or_else(|| "root".to_owned(), |u| u.get_ref().clone()),
        host_key: j
            .host_key
            .as_ref()
            .filter(|k| check_public_key(k, diags))
            .map(|k| normalize_key(k.get_ref())),
    });
    SshSpec {
        address: ssh.address.as_ref().map(|a| a.get_ref().clone()),
        port: port(ssh.port.as_ref(), diags),
        user: ssh.user.as_ref().map(|u| u.get_ref().clone()),
        identity_file: ssh
            .identity_file
            .as_ref()
            .map(|f| base_dir.join(f.get_ref())),
        jump,
    }
}

fn port(value: Option<&Spanned<i64>>, diags: &mut Vec<Diagnostic>) -> Option<u16> {
    let value = value?;
    match u16::try_from(*value.get_ref()) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("port {} is out of range (1 to 65535)", value.get_ref()),
                value.span(),
            ));
            None
        }
    }
}

fn health_spec(host: &RawHost, diags: &mut Vec<Diagnostic>) -> Option<HealthSpec> {
    let health = host.health.as_ref()?;
    if let Some(url) = &health.http {
        if !(url.get_ref().starts_with("http://") || url.get_ref().starts_with("https://")) {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("`{}` is not an http:// or https:// URL", url.get_ref()),
                url.span(),
            ));
        }
    }
    let mut bounded = |value: Option<&Spanned<i64>>, default: u64, max: i64, what: &str| -> u64 {
        match value {
            None => default,
            Some(v) if (1..=max).contains(v.get_ref()) => {
                u64::try_from(*v.get_ref()).unwrap_or(default)
            }
            Some(v) => {
                diags.push(Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!("{what} {} is out of range (1 to {max})", v.get_ref()),
                    v.span(),
                ));
                default
            }
        }
    };
    let retries = bounded(health.retries.as_ref(), 5, 100, "retries");
    let interval = bounded(health.interval.as_ref(), 2, 600, "interval");
    let timeout = bounded(health.timeout.as_ref(), 5, 600, "timeout");
    Some(HealthSpec {
        command: health.command.as_ref().map(|c| c.get_ref().clone()),
        http: health.http.as_ref().map(|u| u.get_ref().clone()),
        retries: u32::try_from(retries).unwrap_or(5),
        interval: Duration::from_secs(interval),
        timeout: Duration::from_secs(timeout),
    })
}

/// `[deploy]`.
pub(crate) fn deploy_settings(
    raw: &RawSpec,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> DeploySettings {
    let d = &raw.deploy;
    let on_failure = match d
        .on_failure
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("stop", _)) => OnFailure::Stop,
        Some(("continue", _)) => OnFailure::Continue,
        Some((other, span)) => {
            diags.push(
                Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!("unknown on_failure `{other}`"),
                    span,
                )
                .help("on_failure is `stop` or `continue`"),
            );
            OnFailure::Stop
        }
    };
    DeploySettings {
        on_failure,
        user: d.user.as_ref().map(|u| u.get_ref().clone()),
        identity_file: d.identity_file.as_ref().map(|f| base_dir.join(f.get_ref())),
        use_agent: d.use_agent.unwrap_or(false),
    }
}

fn is_loopback(address: &str) -> bool {
    address
        .parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.is_loopback())
}

/// An OpenSSH public key line: `ALGORITHM BASE64 [COMMENT]`.
fn check_public_key(key: &Str, diags: &mut Vec<Diagnostic>) -> bool {
    let mut words = key.get_ref().split_whitespace();
    let ok = matches!(words.next(), Some(a) if a.starts_with("ssh-") || a.starts_with("ecdsa-"))
        && words.next().is_some_and(|b| b.len() > 16);
    if !ok {
        diags.push(
            Diagnostic::new(
                ErrorKind::InvalidValue,
                "not an OpenSSH public key",
                key.span(),
            )
            .help("write it as in a known_hosts or .pub file: `ssh-ed25519 AAAA…`"),
        );
    }
    ok
}

/// `ALGORITHM BASE64`, without the comment.
fn normalize_key(key: &str) -> String {
    key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}
