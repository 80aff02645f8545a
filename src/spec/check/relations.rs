//! Checks across definitions: names a host shares with a key pair or with a
//! counted host's machine, the `[providers.ec2]` that EC2 resources need,
//! and `depends_on` cycles.

use super::{Checker, MAX_COUNT};
use crate::providers::Target;
use crate::spec::error::ErrorKind;
use crate::spec::graph::{find_cycles, Node};
use crate::spec::raw::{RawHost, RawSpec, Str};

impl Checker<'_> {
    /// A host may not share its name with a key pair: `NAME` would be
    /// ambiguous for selection and in messages. (A security group named like
    /// the hosts it serves, `[security_groups.web]` for `[hosts.web]`, is the
    /// common idiom and stays allowed.)
    pub(super) fn duplicate_names(&mut self, raw: &RawSpec) {
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
    pub(super) fn machine_names(&mut self, raw: &RawSpec) {
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
    pub(super) fn provider(&mut self, raw: &RawSpec) {
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

    pub(super) fn cycles(&mut self, raw: &RawSpec) {
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
