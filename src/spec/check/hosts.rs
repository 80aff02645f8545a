//! Checks of each `[hosts.NAME]`: its target and the fields that target
//! needs, `count`, references to key pairs, security groups and other
//! hosts, user data, and the provider-specific and deploy parts.

use std::collections::{BTreeMap, BTreeSet};

use super::{key_names, Checker, MAX_COUNT};
use crate::providers::Target;
use crate::spec::check_deploy::host_parts;
use crate::spec::error::ErrorKind;
use crate::spec::raw::{RawHost, RawSpec, Str, StrList};

/// EC2's limit on user data, in bytes.
const MAX_USER_DATA: usize = 16 * 1024;

impl Checker<'_> {
    pub(super) fn host(&mut self, raw: &RawSpec, name: &Str, host: &RawHost) {
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
        crate::spec::check_virtualbox::check_host(raw, name, host, self.base_dir, &mut self.diags);
        crate::spec::check_libvirt::check_host(raw, name, host, self.base_dir, &mut self.diags);
        let parts = host_parts(name, host, self.base_dir, &mut self.diags);
        self.out.host_parts.insert(name.get_ref().clone(), parts);
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
}
