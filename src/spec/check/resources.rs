//! Checks of the EC2 resources a spec defines itself: `[key_pairs.NAME]`
//! (the public key, inline or from a file) and `[security_groups.NAME]`
//! (normalized ingress rules without duplicates).

use super::Checker;
use crate::spec::error::ErrorKind;
use crate::spec::ingress::{check_rule, Rule};
use crate::spec::raw::{RawKeyPair, RawSecurityGroup, Str};

impl Checker<'_> {
    pub(super) fn key_pair(&mut self, name: &Str, kp: &RawKeyPair) {
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

    pub(super) fn security_group(&mut self, name: &Str, sg: &RawSecurityGroup) {
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
}
