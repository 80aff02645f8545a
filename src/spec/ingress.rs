//! Security-group ingress rules: validation and normalization to EC2's form.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use toml::Spanned;

use super::error::{Diagnostic, ErrorKind};
use super::raw::RawIngress;

/// The protocols a rule may name.
const PROTOCOLS: &str = "tcp, udp, icmp, all";

/// An ingress rule normalized the way EC2 reports it: protocol lowercased
/// (`all` is `-1`, with ports -1), CIDR blocks sorted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rule {
    /// `tcp`, `udp`, `icmp` or `-1`.
    pub protocol: String,
    /// First port or ICMP type.
    pub from_port: i64,
    /// Last port or ICMP code.
    pub to_port: i64,
    /// Sorted source CIDR blocks.
    pub cidr_blocks: Vec<String>,
}

impl Rule {
    /// The rule as the `ingress` attribute holds it.
    pub fn to_json(&self) -> Value {
        json!({
            "protocol": self.protocol,
            "from_port": self.from_port,
            "to_port": self.to_port,
            "cidr_blocks": self.cidr_blocks,
        })
    }

    /// Whether EC2 would reject `other` next to `self` as a duplicate
    /// permission: same protocol and ports, some CIDR block in common.
    pub fn overlaps(&self, other: &Self) -> Option<&str> {
        if (&self.protocol, self.from_port, self.to_port)
            != (&other.protocol, other.from_port, other.to_port)
        {
            return None;
        }
        self.cidr_blocks
            .iter()
            .find(|c| other.cidr_blocks.contains(c))
            .map(String::as_str)
    }

    /// Human form: `tcp 22-22`, `all traffic`.
    pub fn describe(&self) -> String {
        match self.protocol.as_str() {
            "-1" => "all traffic".to_owned(),
            p => format!("{p} {}-{}", self.from_port, self.to_port),
        }
    }
}

/// Validates one rule, pushing problems to `diags`; returns the normalized
/// rule when it is valid.
pub(crate) fn check_rule(rule: &Spanned<RawIngress>, diags: &mut Vec<Diagnostic>) -> Option<Rule> {
    let start = diags.len();
    let raw = rule.get_ref();
    let protocol = raw.protocol.get_ref().to_ascii_lowercase();
    let (from_port, to_port) = match protocol.as_str() {
        "all" | "-1" => (Some(-1), Some(-1)),
        "tcp" | "udp" => check_ports(rule, 0, diags, true),
        "icmp" => check_ports(rule, -1, diags, false),
        other => {
            diags.push(
                Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!("unsupported protocol `{other}`"),
                    raw.protocol.span(),
                )
                .help(format!("supported protocols: {PROTOCOLS}")),
            );
            (None, None)
        }
    };
    let cidr_blocks = check_cidrs(raw, diags);
    let protocol = if protocol == "all" {
        "-1".to_owned()
    } else {
        protocol
    };
    match (from_port, to_port) {
        (Some(from_port), Some(to_port)) if diags.len() == start => Some(Rule {
            protocol,
            from_port,
            to_port,
            cidr_blocks,
        }),
        _ => None,
    }
}

/// Checks `from_port`/`to_port` against `min..=65535` (ICMP: `-1..=255`).
fn check_ports(
    rule: &Spanned<RawIngress>,
    min: i64,
    diags: &mut Vec<Diagnostic>,
    ordered: bool,
) -> (Option<i64>, Option<i64>) {
    let raw = rule.get_ref();
    let max = if min < 0 { 255 } else { 65535 };
    let protocol = raw.protocol.get_ref();
    let mut port = |field: &str, value: &Option<Spanned<i64>>| match value {
        None => {
            diags.push(
                Diagnostic::new(
                    ErrorKind::MissingField,
                    format!("{protocol} ingress rule needs `{field}`"),
                    rule.span(),
                )
                .help("only protocol `all` may leave out the ports"),
            );
            None
        }
        Some(v) if !(min..=max).contains(v.get_ref()) => {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!(
                    "{field} {} is out of range for {protocol} (allowed: {min}..={max})",
                    v.get_ref()
                ),
                v.span(),
            ));
            None
        }
        Some(v) => Some(*v.get_ref()),
    };
    let from = port("from_port", &raw.from_port);
    let to = port("to_port", &raw.to_port);
    if let (Some(f), Some(t), Some(to_span)) = (from, to, raw.to_port.as_ref()) {
        if ordered && f > t {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("port range {f}..{t} is empty: from_port must not exceed to_port"),
                to_span.span(),
            ));
            return (None, None);
        }
    }
    (from, to)
}

/// Checks the CIDR list: non-empty, each valid, no duplicates. Returns the
/// sorted blocks.
fn check_cidrs(raw: &RawIngress, diags: &mut Vec<Diagnostic>) -> Vec<String> {
    let list = raw.cidr_blocks.get_ref();
    if list.is_empty() {
        diags.push(
            Diagnostic::new(
                ErrorKind::InvalidValue,
                "cidr_blocks is empty",
                raw.cidr_blocks.span(),
            )
            .help("give at least one IPv4 CIDR block, e.g. \"0.0.0.0/0\""),
        );
    }
    let mut seen = BTreeSet::new();
    for cidr in list {
        let text = cidr.get_ref();
        if let Err(problem) = parse_cidr(text) {
            let mut d = Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("`{text}` is not a valid IPv4 CIDR block: {problem}"),
                cidr.span(),
            );
            d = match problem {
                CidrProblem::HostBits(network) => d.help(format!("did you mean `{network}`?")),
                _ => d.help("expected a.b.c.d/n with n in 0..=32"),
            };
            diags.push(d);
        } else if !seen.insert(text.as_str()) {
            diags.push(Diagnostic::new(
                ErrorKind::DuplicateEntry,
                format!("`{text}` is listed twice in cidr_blocks"),
                cidr.span(),
            ));
        }
    }
    seen.into_iter().map(str::to_owned).collect()
}

/// Why a CIDR block does not parse.
#[derive(Debug)]
enum CidrProblem {
    /// No `/n`.
    NoPrefix,
    /// Not a dotted-quad address.
    Address,
    /// Prefix length not in 0..=32.
    Prefix,
    /// Bits set after the prefix; holds the network form.
    HostBits(String),
}

impl std::fmt::Display for CidrProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NoPrefix => "missing `/prefix`",
            Self::Address => "bad address",
            Self::Prefix => "prefix length must be 0..=32",
            Self::HostBits(_) => "address has bits set beyond the prefix",
        })
    }
}

/// Parses `a.b.c.d/n`, requiring the address to be the network address.
fn parse_cidr(s: &str) -> Result<(), CidrProblem> {
    let (addr, prefix) = s.split_once('/').ok_or(CidrProblem::NoPrefix)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| CidrProblem::Address)?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 2 {
        return Err(CidrProblem::Prefix);
    }
    let prefix: u32 = prefix.parse().map_err(|_| CidrProblem::Prefix)?;
    if prefix > 32 {
        return Err(CidrProblem::Prefix);
    }
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    let bits = u32::from(addr);
    if bits & !mask != 0 {
        return Err(CidrProblem::HostBits(format!(
            "{}/{prefix}",
            Ipv4Addr::from(bits & mask)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs() {
        for ok in ["0.0.0.0/0", "10.0.0.0/8", "192.168.1.7/32", "172.16.0.0/12"] {
            assert!(parse_cidr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.0",
            "10.0.0/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "256.0.0.0/8",
            "10.0.0.1/8",
            "::/0",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
