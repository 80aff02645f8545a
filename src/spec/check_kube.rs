//! Checks and conversion of `[kubernetes.NAME]` and `[hosts.NAME.kubernetes]`:
//! every mistake located at the value it is about, the cluster rules
//! themselves (`crate::kube::check`) shown at the hosts and ranges they name.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use prov_provider::Address;
use toml::Spanned;

use super::check::valid_name;
use super::check_deploy::HostParts;
use super::error::{Diagnostic, ErrorKind};
use super::kubernetes::{node_name, ApiSpec, ClusterSpec, HostKube};
use super::raw::{RawHost, RawSpec, Str};
use super::raw_kube::{RawCluster, RawHostKube};
use crate::kube::check::{self, label_problem, Problem};
use crate::kube::cidr::Cidr;
use crate::kube::model::{ApiEndpoint, Flavor, Role, DEFAULT_RENEW_BEFORE};

/// The NixOS module's default service range.
const DEFAULT_SERVICE_CIDR: &str = "10.0.0.0/24";
/// The NixOS module's default pod range.
const DEFAULT_POD_CIDR: &str = "10.1.0.0/16";
/// The longest `renew_before_days` (certificates live a year).
const MAX_RENEW_BEFORE_DAYS: i64 = 364;
/// How long a gate may take when the spec says nothing.
const DEFAULT_GATE_TIMEOUT: u64 = 300;
/// The longest gate timeout accepted: a day.
const MAX_GATE_TIMEOUT: i64 = 86_400;

/// What the checks made of the spec's Kubernetes parts.
#[derive(Debug, Default)]
pub(crate) struct Kubernetes {
    /// Clusters by name.
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Each host's part, by host name.
    pub hosts: BTreeMap<String, HostKube>,
}

/// Checks every cluster and every host's part in one; `parts` are the
/// hosts' checked deploy parts (a member must have a system).
pub(crate) fn check_kubernetes(
    raw: &RawSpec,
    parts: &BTreeMap<String, HostParts>,
    diags: &mut Vec<Diagnostic>,
) -> Kubernetes {
    let mut out = Kubernetes::default();
    for (name, host) in &raw.hosts {
        let Some(table) = &host.kubernetes else {
            continue;
        };
        if let Some(kube) = host_kube(raw, name, table, diags) {
            let has_system = parts
                .get(name.get_ref())
                .is_some_and(|p| p.deploy.is_some());
            if !has_system {
                diags.push(
                    Diagnostic::new(
                        ErrorKind::MissingField,
                        format!(
                            "host `{}` has a Kubernetes role but no system to deploy",
                            name.get_ref()
                        ),
                        table.span(),
                    )
                    .help("give it `system`, `nix` or `flake`: its NixOS configuration imports the module prov generates"),
                );
            }
            out.hosts.insert(name.get_ref().clone(), kube);
        }
    }
    for (name, cluster) in &raw.kubernetes {
        if let Some(spec) = cluster_spec(raw, name, cluster, diags) {
            rules(raw, &spec, name, cluster, &out.hosts, diags);
            out.clusters.insert(name.get_ref().clone(), spec);
        }
    }
    out
}

/// One host's `[hosts.NAME.kubernetes]`.
fn host_kube(
    raw: &RawSpec,
    name: &Str,
    table: &Spanned<RawHostKube>,
    diags: &mut Vec<Diagnostic>,
) -> Option<HostKube> {
    let before = diags.len();
    let kube = table.get_ref();
    let cluster = kube.cluster.get_ref();
    if !raw.kubernetes.keys().any(|k| k.get_ref() == cluster) {
        let known: Vec<&str> = raw
            .kubernetes
            .keys()
            .map(|k| k.get_ref().as_str())
            .collect();
        let help = if known.is_empty() {
            format!("declare it: [kubernetes.{cluster}]")
        } else {
            format!("clusters in this spec: {}", known.join(", "))
        };
        diags.push(
            Diagnostic::new(
                ErrorKind::UndefinedReference,
                format!(
                    "host `{}` is in cluster `{cluster}`, which is not declared",
                    name.get_ref()
                ),
                kube.cluster.span(),
            )
            .help(help),
        );
    }
    let mut roles = BTreeSet::new();
    for role in kube.roles.get_ref() {
        match parse_role(role.get_ref()) {
            Some(parsed) if !roles.insert(parsed) => diags.push(Diagnostic::new(
                ErrorKind::DuplicateEntry,
                format!("role `{}` is listed twice", role.get_ref()),
                role.span(),
            )),
            Some(_) => {}
            None => diags.push(
                Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!("`{}` is not a Kubernetes role", role.get_ref()),
                    role.span(),
                )
                .help("roles are `control-plane` and `worker`"),
            ),
        }
    }
    if kube.roles.get_ref().is_empty() {
        diags.push(
            Diagnostic::new(
                ErrorKind::MissingField,
                format!(
                    "host `{}` is in cluster `{cluster}` with no role",
                    name.get_ref()
                ),
                kube.roles.span(),
            )
            .help("roles = [\"control-plane\"], [\"worker\"] or both"),
        );
    }
    let mut labels = BTreeMap::new();
    for (key, value) in &kube.labels {
        let problem = label_problem(key.get_ref(), value.get_ref());
        if let Some(reason) = problem {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("label `{}`: {reason}", key.get_ref()),
                key.span(),
            ));
        }
        labels.insert(key.get_ref().clone(), value.get_ref().clone());
    }
    (diags.len() == before).then(|| HostKube {
        cluster: cluster.clone(),
        roles,
        labels,
    })
}

fn parse_role(text: &str) -> Option<Role> {
    [Role::ControlPlane, Role::Worker]
        .into_iter()
        .find(|r| r.as_str() == text)
}

/// One `[kubernetes.NAME]` table, on its own.
fn cluster_spec(
    raw: &RawSpec,
    name: &Str,
    table: &Spanned<RawCluster>,
    diags: &mut Vec<Diagnostic>,
) -> Option<ClusterSpec> {
    let before = diags.len();
    let cluster = table.get_ref();
    if !valid_name(name.get_ref()) {
        diags.push(Diagnostic::new(
            ErrorKind::InvalidName,
            format!("`{}` is not a valid cluster name", name.get_ref()),
            name.span(),
        ));
    }
    let flavor = match cluster.flavor.as_ref() {
        None => Flavor::Nixos,
        Some(text) => match [Flavor::Nixos, Flavor::K3s]
            .into_iter()
            .find(|f| f.as_str() == text.get_ref())
        {
            Some(flavor) => flavor,
            None => {
                diags.push(
                    Diagnostic::new(
                        ErrorKind::InvalidValue,
                        format!("`{}` is not a Kubernetes flavour", text.get_ref()),
                        text.span(),
                    )
                    .help("flavor = \"nixos\" (services.kubernetes) or \"k3s\" (services.k3s)"),
                );
                Flavor::Nixos
            }
        },
    };
    let service_cidr = cidr(cluster.service_cidr.as_ref(), DEFAULT_SERVICE_CIDR, diags);
    let pod_cidr = cidr(cluster.pod_cidr.as_ref(), DEFAULT_POD_CIDR, diags);
    let api = api(raw, name, cluster, diags);
    let renew_before = match &cluster.renew_before_days {
        None => DEFAULT_RENEW_BEFORE,
        Some(days) if (1..=MAX_RENEW_BEFORE_DAYS).contains(days.get_ref()) => {
            Duration::from_secs(u64::try_from(*days.get_ref()).unwrap_or(30) * 24 * 3600)
        }
        Some(days) => {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!(
                    "renew_before_days must be from 1 to {MAX_RENEW_BEFORE_DAYS} (certificates live a year), not {}",
                    days.get_ref()
                ),
                days.span(),
            ));
            DEFAULT_RENEW_BEFORE
        }
    };
    let gate_timeout = match &cluster.gate_timeout_seconds {
        None => Duration::from_secs(DEFAULT_GATE_TIMEOUT),
        Some(seconds) => match u64::try_from(*seconds.get_ref()) {
            Ok(n) if (1..=MAX_GATE_TIMEOUT).contains(seconds.get_ref()) => Duration::from_secs(n),
            _ => {
                diags.push(Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!(
                        "gate_timeout_seconds must be from 1 to {MAX_GATE_TIMEOUT}, not {}",
                        seconds.get_ref()
                    ),
                    seconds.span(),
                ));
                Duration::from_secs(DEFAULT_GATE_TIMEOUT)
            }
        },
    };
    let recipients = cluster
        .recipients
        .iter()
        .flat_map(|l| l.get_ref())
        .map(|r| r.get_ref().clone())
        .collect();
    if diags.len() != before {
        return None;
    }
    Some(ClusterSpec {
        name: name.get_ref().clone(),
        flavor,
        api: api?,
        service_cidr: service_cidr?,
        pod_cidr: pod_cidr?,
        renew_before,
        gate_timeout,
        recipients,
    })
}

/// A range as written, or the default.
fn cidr(value: Option<&Str>, default: &str, diags: &mut Vec<Diagnostic>) -> Option<Cidr> {
    match value {
        None => default.parse().ok(),
        Some(value) => super::check::parse_at(value, diags),
    }
}

/// `api_host` or `api_endpoint` (not both); the first control plane when
/// neither is given.
fn api(
    raw: &RawSpec,
    name: &Str,
    cluster: &RawCluster,
    diags: &mut Vec<Diagnostic>,
) -> Option<ApiSpec> {
    match (&cluster.api_host, &cluster.api_endpoint) {
        (Some(_), Some(endpoint)) => {
            diags.push(Diagnostic::new(
                ErrorKind::Conflict,
                "give `api_host` or `api_endpoint`, not both",
                endpoint.span(),
            ));
            None
        }
        (None, Some(endpoint)) => match parse_endpoint(endpoint.get_ref()) {
            Some(parsed) => Some(ApiSpec::Endpoint(parsed)),
            None => {
                diags.push(
                    Diagnostic::new(
                        ErrorKind::InvalidValue,
                        format!("`{}` is not an apiserver endpoint", endpoint.get_ref()),
                        endpoint.span(),
                    )
                    .help("write it as https://HOST or https://HOST:PORT"),
                );
                None
            }
        },
        (Some(host), None) => {
            let address = member_addresses(raw, name.get_ref())
                .into_iter()
                .find(|(address, _, roles)| {
                    address.to_string() == *host.get_ref() && roles.contains(&Role::ControlPlane)
                })
                .map(|(address, _, _)| address);
            if address.is_none() {
                diags.push(
                    Diagnostic::new(
                        ErrorKind::UndefinedReference,
                        format!(
                            "api_host `{}` is not a control-plane host of cluster `{}`",
                            host.get_ref(),
                            name.get_ref()
                        ),
                        host.span(),
                    )
                    .help("name a host (`cp`, or `cp[0]` for a counted one) whose [hosts.NAME.kubernetes] roles include \"control-plane\""),
                );
            }
            address.map(ApiSpec::Host)
        }
        (None, None) => member_addresses(raw, name.get_ref())
            .into_iter()
            .find(|(_, _, roles)| roles.contains(&Role::ControlPlane))
            .map(|(address, _, _)| ApiSpec::Host(address))
            // No control plane: reported by the cluster rules.
            .or_else(|| Some(ApiSpec::Host(Address::host(name.get_ref(), None)))),
    }
}

/// `https://HOST[:PORT]`.
fn parse_endpoint(text: &str) -> Option<ApiEndpoint> {
    let rest = text.strip_prefix("https://")?.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            (host, port.parse().ok()?)
        }
        _ => (rest, crate::kube::model::DEFAULT_API_PORT),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    Some(ApiEndpoint {
        host: host.to_owned(),
        port,
    })
}

/// Every host address of `cluster`'s members, with the host it comes from
/// and its roles, in the spec's order.
fn member_addresses<'a>(
    raw: &'a RawSpec,
    cluster: &str,
) -> Vec<(Address, &'a Str, BTreeSet<Role>)> {
    let mut out = Vec::new();
    for (name, host) in &raw.hosts {
        let Some(kube) = host.kubernetes.as_ref().map(Spanned::get_ref) else {
            continue;
        };
        if kube.cluster.get_ref() != cluster {
            continue;
        }
        let roles: BTreeSet<Role> = kube
            .roles
            .get_ref()
            .iter()
            .filter_map(|r| parse_role(r.get_ref()))
            .collect();
        for address in addresses(name.get_ref(), host) {
            out.push((address, name, roles.clone()));
        }
    }
    out
}

/// The addresses of host `name`: one, or one per `count`.
fn addresses(name: &str, host: &RawHost) -> Vec<Address> {
    match &host.count {
        None => vec![Address::host(name, None)],
        Some(n) => (0..u32::try_from(*n.get_ref()).unwrap_or(0))
            .map(|i| Address::host(name, Some(i)))
            .collect(),
    }
}

/// The cluster rules (`crate::kube::check`) on the spec's members, each
/// problem shown where it can be fixed.
fn rules(
    raw: &RawSpec,
    spec: &ClusterSpec,
    name: &Str,
    table: &Spanned<RawCluster>,
    hosts: &BTreeMap<String, HostKube>,
    diags: &mut Vec<Diagnostic>,
) {
    let members = member_addresses(raw, name.get_ref());
    // A member with mistakes of its own (reported already) would make the
    // cluster's rules say more than is true.
    if members
        .iter()
        .any(|(_, host, _)| !hosts.contains_key(host.get_ref()))
    {
        return;
    }
    let model = crate::kube::model::Cluster {
        name: spec.name.clone(),
        flavor: spec.flavor,
        api_endpoint: ApiEndpoint::new(&spec.name),
        service_cidr: spec.service_cidr,
        pod_cidr: spec.pod_cidr,
        renew_before: spec.renew_before,
        members: members
            .iter()
            .map(|(address, host, roles)| crate::kube::model::Member {
                address: address.clone(),
                node_name: node_name(address),
                roles: roles.clone(),
                labels: hosts
                    .get(host.get_ref())
                    .map(|h| h.labels.clone())
                    .unwrap_or_default(),
                ips: Vec::new(),
                dns_names: Vec::new(),
            })
            .collect(),
    };
    let cluster = table.get_ref();
    let host_span = |address: &Address| -> Range<usize> {
        members
            .iter()
            .find(|(a, _, _)| a == address)
            .map_or(name.span(), |(_, host, _)| host.span())
    };
    let roles_span = |address: &Address| -> Range<usize> {
        raw.hosts
            .get_key_value(address.name.as_str())
            .and_then(|(_, h)| h.kubernetes.as_ref())
            .map_or_else(|| host_span(address), |k| k.get_ref().roles.span())
    };
    let or_name = |value: Option<&Str>| value.map_or(name.span(), Spanned::span);
    for problem in check::check(&model) {
        let span = match &problem {
            Problem::NoControlPlane => name.span(),
            Problem::TooManyControlPlanes { extra, .. } => {
                extra.first().map_or(name.span(), &roles_span)
            }
            Problem::CidrsOverlap { .. } => or_name(cluster.pod_cidr.as_ref()),
            Problem::NoFirstServiceIp(_) | Problem::ServiceCidrNotIpv4(_) => {
                or_name(cluster.service_cidr.as_ref())
            }
            Problem::NoRoles(address) => roles_span(address),
            Problem::DuplicateNodeName { members, .. } => {
                members.last().map_or(name.span(), &host_span)
            }
            Problem::InvalidNodeName { member, .. } | Problem::InvalidLabel { member, .. } => {
                host_span(member)
            }
            Problem::HostIpInClusterRange { member, .. } => host_span(member),
        };
        diags.push(Diagnostic::new(
            ErrorKind::InvalidValue,
            format!("cluster `{}`: {problem}", name.get_ref()),
            span,
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::parse_toml;
    use super::*;

    const SYSTEM: &str = "system = \"/nix/store/0000000000000000000000000000000a-nixos-system\"\n";

    fn host(name: &str, kube: &str) -> String {
        format!("[hosts.{name}]\ntarget = \"local\"\n{SYSTEM}[hosts.{name}.kubernetes]\n{kube}")
    }

    fn spec(cluster: &str, hosts: Vec<String>) -> String {
        format!(
            "deployment = \"k\"\n[kubernetes.dev]\n{cluster}{}",
            hosts.concat()
        )
    }

    /// (what, spec, "LINE:COL", words the message holds)
    fn cases() -> Vec<(&'static str, String, (usize, usize), &'static str)> {
        let cp = host("cp", "cluster = \"dev\"\nroles = [\"control-plane\"]\n");
        let worker = host("node", "cluster = \"dev\"\nroles = [\"worker\"]\n");
        vec![
            (
                "unknown cluster",
                spec("", vec![cp.clone(), host("x", "cluster = \"prod\"\nroles = [\"worker\"]\n")]),
                (13, 11),
                "`prod`, which is not declared",
            ),
            ("no control plane", spec("", vec![worker.clone()]), (2, 13), "no control plane"),
            (
                "more control planes than nixos supports",
                spec("", vec![cp.clone(), host("cp2", "cluster = \"dev\"\nroles = [\"control-plane\"]\n")]),
                (14, 9),
                "supports 1 control plane",
            ),
            (
                "overlapping ranges",
                spec("service_cidr = \"10.0.0.0/16\"\npod_cidr = \"10.0.8.0/24\"\n", vec![cp.clone()]),
                (4, 12),
                "overlap",
            ),
            (
                "a role on a host with no system",
                spec(
                    "",
                    vec![
                        cp.clone(),
                        "[hosts.bare]\ntarget = \"local\"\n[hosts.bare.kubernetes]\ncluster = \"dev\"\nroles = [\"worker\"]\n".to_owned(),
                    ],
                ),
                (11, 1),
                "no system to deploy",
            ),
            (
                "unknown role",
                spec("", vec![host("cp", "cluster = \"dev\"\nroles = [\"master\"]\n")]),
                (8, 10),
                "not a Kubernetes role",
            ),
            ("unknown flavour", spec("flavor = \"kubeadm\"\n", vec![cp.clone()]), (3, 10), "flavour"),
            (
                "api_host that is no control plane",
                spec("api_host = \"node\"\n", vec![cp.clone(), worker.clone()]),
                (3, 12),
                "not a control-plane host",
            ),
            (
                "bad endpoint",
                spec("api_endpoint = \"http://cp\"\n", vec![cp.clone()]),
                (3, 16),
                "not an apiserver endpoint",
            ),
            (
                "renew_before_days out of range",
                spec("renew_before_days = 400\n", vec![cp]),
                (3, 21),
                "renew_before_days",
            ),
        ]
    }

    #[test]
    fn kubernetes_mistakes_are_located() {
        let mut failures = Vec::new();
        for (what, source, location, words) in cases() {
            match parse_toml(&source, Path::new("prov.toml")) {
                Ok(_) => failures.push(format!("{what}: parsed without error")),
                Err(error) => {
                    let rendered = error.to_string();
                    if error.location() != Some(location) || !rendered.contains(words) {
                        failures.push(format!(
                            "{what}: expected {location:?} with `{words}`, got {:?}:\n{rendered}",
                            error.location()
                        ));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn a_cluster_and_its_members_convert() {
        let source = spec(
            "flavor = \"k3s\"\napi_host = \"cp\"\n",
            vec![
                host("cp", "cluster = \"dev\"\nroles = [\"control-plane\", \"worker\"]\n"),
                format!(
                    "[hosts.node]\ntarget = \"local\"\ncount = 2\n{SYSTEM}[hosts.node.kubernetes]\ncluster = \"dev\"\nroles = [\"worker\"]\nlabels = {{ tier = \"web\" }}\n"
                ),
            ],
        );
        let spec = parse_toml(&source, Path::new("prov.toml")).unwrap();
        let cluster = &spec.kubernetes["dev"];
        assert_eq!(cluster.flavor, Flavor::K3s);
        assert_eq!(cluster.api, ApiSpec::Host(Address::host("cp", None)));
        assert_eq!(cluster.service_cidr.to_string(), DEFAULT_SERVICE_CIDR);
        let model = cluster.model(&spec.hosts, |_| vec!["127.0.0.9".parse().unwrap()]);
        let names: Vec<&str> = model.members.iter().map(|m| m.node_name.as_str()).collect();
        assert_eq!(names, ["cp", "node-0", "node-1"]);
        assert_eq!(model.api_endpoint.url(), "https://127.0.0.9:6443");
        assert_eq!(model.members[1].labels["tier"], "web");
        assert!(model.members[0].is_control_plane() && model.members[0].is_worker());
    }
}
