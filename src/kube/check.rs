//! What can be wrong with a [`Cluster`] before anything is issued: typed
//! problems, each naming the members involved so the spec layer can point
//! at them. Pure functions; no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use prov_provider::Address;

use super::cidr::Cidr;
use super::model::{Cluster, Flavor};

/// One problem with a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// No member has the control-plane role.
    #[error(
        "the cluster has no control plane: give at least one host roles = [\"control-plane\"]"
    )]
    NoControlPlane,
    /// More control planes than the flavour's module supports.
    #[error("the {flavor} flavour supports {max} control plane(s), the cluster has {count}{hint}", hint = if *flavor == Flavor::Nixos { " (the NixOS module does not support HA; use flavor = \"k3s\" for several)" } else { "" })]
    TooManyControlPlanes {
        /// The flavour.
        flavor: Flavor,
        /// How many it has.
        count: usize,
        /// How many the flavour supports.
        max: usize,
        /// The control planes past the limit.
        extra: Vec<Address>,
    },
    /// The service and pod ranges share addresses.
    #[error("service_cidr {service} and pod_cidr {pod} overlap")]
    CidrsOverlap {
        /// The service range.
        service: Cidr,
        /// The pod range.
        pod: Cidr,
    },
    /// The service range is too small to hold the `kubernetes` service IP.
    #[error("service_cidr {0} has no address for the `kubernetes` service (network + 1)")]
    NoFirstServiceIp(Cidr),
    /// The NixOS module derives service addresses from the first three
    /// octets: it needs an IPv4 service range.
    #[error("service_cidr {0}: the nixos flavour needs an IPv4 range (the NixOS module derives the service and DNS addresses from its first three octets)")]
    ServiceCidrNotIpv4(Cidr),
    /// A member with no role.
    #[error("host {0} is in the cluster with no role: give it roles = [\"control-plane\"], [\"worker\"] or both")]
    NoRoles(Address),
    /// Two members register under one node name.
    #[error("hosts {} register as the same node `{node_name}`", list(members))]
    DuplicateNodeName {
        /// The shared name.
        node_name: String,
        /// The members that share it.
        members: Vec<Address>,
    },
    /// A node name Kubernetes rejects (lowercase DNS name, at most 253
    /// characters).
    #[error("host {member}: `{node_name}` is not a valid node name (lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit)")]
    InvalidNodeName {
        /// The member.
        member: Address,
        /// Its node name.
        node_name: String,
    },
    /// A label key or value Kubernetes rejects.
    #[error("host {member}: label `{key}`: {reason}")]
    InvalidLabel {
        /// The member.
        member: Address,
        /// The label's key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A host address inside the service or pod range: traffic to it would
    /// be routed into the cluster network.
    #[error("host {member}: its address {ip} lies inside the cluster's {range_name} {range}")]
    HostIpInClusterRange {
        /// The member.
        member: Address,
        /// Its address.
        ip: IpAddr,
        /// `service_cidr` or `pod_cidr`.
        range_name: &'static str,
        /// The range.
        range: Cidr,
    },
}

/// Every problem with `cluster`, in a stable order (empty when it is fine).
#[must_use]
pub fn check(cluster: &Cluster) -> Vec<Problem> {
    let mut problems = Vec::new();
    let control_planes: Vec<&Address> = cluster.control_planes().map(|m| &m.address).collect();
    if control_planes.is_empty() {
        problems.push(Problem::NoControlPlane);
    }
    if let Some(max) = cluster.flavor.max_control_planes() {
        if control_planes.len() > max {
            problems.push(Problem::TooManyControlPlanes {
                flavor: cluster.flavor,
                count: control_planes.len(),
                max,
                extra: control_planes[max..].iter().map(|a| (*a).clone()).collect(),
            });
        }
    }
    problems.extend(check_ranges(cluster));
    let mut by_name: BTreeMap<&str, Vec<Address>> = BTreeMap::new();
    for member in &cluster.members {
        by_name
            .entry(member.node_name.as_str())
            .or_default()
            .push(member.address.clone());
        if member.roles.is_empty() {
            problems.push(Problem::NoRoles(member.address.clone()));
        }
        if !is_node_name(&member.node_name) {
            problems.push(Problem::InvalidNodeName {
                member: member.address.clone(),
                node_name: member.node_name.clone(),
            });
        }
        for (key, value) in &member.labels {
            if let Some(reason) = label_problem(key, value) {
                problems.push(Problem::InvalidLabel {
                    member: member.address.clone(),
                    key: key.clone(),
                    reason,
                });
            }
        }
        for ip in &member.ips {
            for (range_name, range) in [
                ("service_cidr", cluster.service_cidr),
                ("pod_cidr", cluster.pod_cidr),
            ] {
                if range.contains(*ip) {
                    problems.push(Problem::HostIpInClusterRange {
                        member: member.address.clone(),
                        ip: *ip,
                        range_name,
                        range,
                    });
                }
            }
        }
    }
    for (node_name, members) in by_name {
        if members.len() > 1 {
            problems.push(Problem::DuplicateNodeName {
                node_name: node_name.to_owned(),
                members,
            });
        }
    }
    problems
}

/// The problems of the service and pod ranges alone.
fn check_ranges(cluster: &Cluster) -> Vec<Problem> {
    let mut problems = Vec::new();
    if cluster.service_cidr.overlaps(&cluster.pod_cidr) {
        problems.push(Problem::CidrsOverlap {
            service: cluster.service_cidr,
            pod: cluster.pod_cidr,
        });
    }
    if cluster.service_cidr.first_service_ip().is_none() {
        problems.push(Problem::NoFirstServiceIp(cluster.service_cidr));
    }
    if cluster.flavor == Flavor::Nixos && !cluster.service_cidr.network().is_ipv4() {
        problems.push(Problem::ServiceCidrNotIpv4(cluster.service_cidr));
    }
    problems
}

/// Whether `name` is a DNS-1123 subdomain (what a node name must be).
#[must_use]
pub fn is_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// What is wrong with a label (`None` when Kubernetes accepts it).
#[must_use]
pub fn label_problem(key: &str, value: &str) -> Option<&'static str> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_node_name(prefix) {
                return Some("the key's prefix must be a lowercase DNS name");
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_word(name) {
        return Some("the key must be at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit");
    }
    if !value.is_empty() && !is_label_word(value) {
        return Some("the value must be empty or at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit");
    }
    None
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_label_word(word: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    word.len() <= 63
        && edge(word.chars().next())
        && edge(word.chars().last())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Addresses as `a, b and c`.
fn list(addresses: &[Address]) -> String {
    let names: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::model::{ApiEndpoint, Member, Role, DEFAULT_RENEW_BEFORE};

    /// A member without addresses (the fixture's, else).
    fn member(name: &str, roles: &[Role]) -> Member {
        Member {
            ips: Vec::new(),
            ..crate::kube::testing::member(name, 1, roles)
        }
    }

    fn cluster(flavor: Flavor, members: Vec<Member>) -> Cluster {
        Cluster {
            name: "dev".into(),
            flavor,
            api_endpoint: ApiEndpoint::new("cp"),
            service_cidr: "10.0.0.0/24".parse().unwrap(),
            pod_cidr: "10.1.0.0/16".parse().unwrap(),
            renew_before: DEFAULT_RENEW_BEFORE,
            members,
        }
    }

    #[test]
    fn a_good_cluster_has_no_problems() {
        let c = cluster(
            Flavor::Nixos,
            vec![
                member("cp", &[Role::ControlPlane]),
                member("w1", &[Role::Worker]),
            ],
        );
        assert_eq!(check(&c), vec![]);
    }

    #[test]
    fn no_control_plane() {
        let c = cluster(Flavor::K3s, vec![member("w1", &[Role::Worker])]);
        assert_eq!(check(&c), vec![Problem::NoControlPlane]);
    }

    #[test]
    fn nixos_takes_one_control_plane_and_k3s_many() {
        let members = vec![
            member("a", &[Role::ControlPlane]),
            member("b", &[Role::ControlPlane, Role::Worker]),
            member("c", &[Role::ControlPlane]),
        ];
        let problems = check(&cluster(Flavor::Nixos, members.clone()));
        assert_eq!(
            problems,
            vec![Problem::TooManyControlPlanes {
                flavor: Flavor::Nixos,
                count: 3,
                max: 1,
                extra: vec![Address::host("b", None), Address::host("c", None)],
            }]
        );
        assert!(problems[0].to_string().contains("does not support HA"));
        assert_eq!(check(&cluster(Flavor::K3s, members)), vec![]);
    }

    #[test]
    fn ranges() {
        let mut c = cluster(Flavor::Nixos, vec![member("cp", &[Role::ControlPlane])]);
        c.pod_cidr = "10.0.0.0/16".parse().unwrap();
        assert_eq!(
            check(&c),
            vec![Problem::CidrsOverlap {
                service: c.service_cidr,
                pod: c.pod_cidr
            }]
        );
        c.pod_cidr = "10.1.0.0/16".parse().unwrap();
        c.service_cidr = "10.0.0.9/32".parse().unwrap();
        assert_eq!(check(&c), vec![Problem::NoFirstServiceIp(c.service_cidr)]);
        c.service_cidr = "fd00::/108".parse().unwrap();
        assert_eq!(check(&c), vec![Problem::ServiceCidrNotIpv4(c.service_cidr)]);
        c.flavor = Flavor::K3s;
        assert_eq!(check(&c), vec![]);
    }

    #[test]
    fn members() {
        let mut bad = member("w1", &[]);
        bad.node_name = "Web_1".into();
        bad.labels.insert("tier".into(), "web".into());
        bad.labels.insert("example.com/ok".into(), String::new());
        bad.labels.insert("-bad".into(), "x".into());
        bad.labels.insert("Bad.Prefix/x".into(), "x".into());
        bad.labels.insert("v".into(), "no spaces".into());
        bad.ips.push("10.1.2.3".parse().unwrap());
        let mut twin = member("w2", &[Role::Worker]);
        twin.node_name = "cp".into();
        let c = cluster(
            Flavor::Nixos,
            vec![member("cp", &[Role::ControlPlane]), bad, twin],
        );
        let messages: Vec<String> = check(&c).iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 7, "{messages:#?}");
        assert!(messages[0].contains("host w1 is in the cluster with no role"));
        assert!(messages[1].contains("`Web_1` is not a valid node name"));
        assert!(messages[2].contains("label `-bad`: the key must"));
        assert!(messages[3].contains("label `Bad.Prefix/x`: the key's prefix"));
        assert!(messages[4].contains("label `v`: the value must"));
        assert_eq!(
            messages[5],
            "host w1: its address 10.1.2.3 lies inside the cluster's pod_cidr 10.1.0.0/16"
        );
        assert_eq!(
            messages[6],
            "hosts cp and w2 register as the same node `cp`"
        );
    }

    #[test]
    fn node_names() {
        assert!(is_node_name("cp"));
        assert!(is_node_name("node-1.example.com"));
        assert!(!is_node_name(""));
        assert!(!is_node_name("-a"));
        assert!(!is_node_name("a..b"));
        assert!(!is_node_name("UPPER"));
        assert!(!is_node_name(&"a".repeat(254)));
    }
}
