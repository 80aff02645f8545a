//! Security group ingress rules, normalized so that what the spec says and what
//! EC2 reports compare equal.
//!
//! A rule is `{"protocol": "tcp", "from_port": 22, "to_port": 22,
//! "cidr_blocks": ["0.0.0.0/0"]}`. Normal form: protocol as EC2 reports it
//! (`tcp`, `udp`, `icmp`, `-1` for all), no ports for `-1`, rules with the same
//! protocol and ports merged, CIDR blocks sorted, rules sorted.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{IpPermission, IpRange};
use serde_json::{json, Value};

/// What identifies a rule apart from its sources.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RuleKey {
    /// `tcp`, `udp`, `icmp`, `-1` or another protocol as EC2 reports it.
    pub protocol: String,
    /// First port (ICMP type); `None` for all protocols.
    pub from_port: Option<i32>,
    /// Last port (ICMP code); `None` for all protocols.
    pub to_port: Option<i32>,
}

/// Rules in normal form: each protocol/port range with its CIDR blocks.
pub(crate) type RuleSet = BTreeMap<RuleKey, BTreeSet<String>>;

/// The protocol name EC2 reports for `p`.
pub(crate) fn normalize_protocol(p: &str) -> String {
    let p = p.trim().to_ascii_lowercase();
    match p.as_str() {
        "all" | "-1" => "-1".to_owned(),
        "tcp" | "6" => "tcp".to_owned(),
        "udp" | "17" => "udp".to_owned(),
        "icmp" | "1" => "icmp".to_owned(),
        _ => p,
    }
}

fn key(protocol: &str, from: Option<i32>, to: Option<i32>) -> RuleKey {
    let protocol = normalize_protocol(protocol);
    if protocol == "-1" {
        return RuleKey {
            protocol,
            from_port: None,
            to_port: None,
        };
    }
    let (from_port, to_port) = match (from, to) {
        (None, None) if protocol == "icmp" => (Some(-1), Some(-1)),
        (Some(f), None) => (Some(f), Some(f)),
        (f, t) => (f, t),
    };
    RuleKey {
        protocol,
        from_port,
        to_port,
    }
}

fn port(
    rule: &serde_json::Map<String, Value>,
    name: &str,
    n: usize,
) -> Result<Option<i32>, String> {
    match rule.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .map(Some)
            .ok_or_else(|| format!("ingress rule {n}: `{name}` must be an integer, not {v}")),
    }
}

/// Parses the `ingress` attribute (absent or null = no rules).
pub(crate) fn parse(value: Option<&Value>) -> Result<RuleSet, String> {
    let mut set = RuleSet::new();
    let rules = match value {
        None | Some(Value::Null) => return Ok(set),
        Some(Value::Array(rules)) => rules,
        Some(other) => return Err(format!("`ingress` must be a list of rules, not {other}")),
    };
    for (n, rule) in rules.iter().enumerate() {
        let Value::Object(rule) = rule else {
            return Err(format!("ingress rule {n} must be a table, not {rule}"));
        };
        for name in rule.keys() {
            if !matches!(
                name.as_str(),
                "protocol" | "from_port" | "to_port" | "cidr_blocks"
            ) {
                return Err(format!(
                    "ingress rule {n}: unknown field `{name}` (expected protocol, from_port, to_port, cidr_blocks)"
                ));
            }
        }
        let protocol = match rule.get("protocol") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(num)) => num.to_string(),
            None | Some(Value::Null) => {
                return Err(format!("ingress rule {n}: `protocol` is required"))
            }
            Some(other) => return Err(format!("ingress rule {n}: bad `protocol` {other}")),
        };
        let key = key(
            &protocol,
            port(rule, "from_port", n)?,
            port(rule, "to_port", n)?,
        );
        if key.protocol != "-1" && key.protocol != "icmp" && key.from_port.is_none() {
            return Err(format!(
                "ingress rule {n}: `from_port` is required for protocol {}",
                key.protocol
            ));
        }
        if key.to_port.is_some() && key.from_port.is_none() {
            return Err(format!("ingress rule {n}: `to_port` needs `from_port`"));
        }
        let cidrs = match rule.get("cidr_blocks") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|c| {
                    c.as_str()
                        .map(|s| s.trim().to_owned())
                        .ok_or_else(|| format!("ingress rule {n}: CIDR block {c} is not a string"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(format!(
                    "ingress rule {n}: `cidr_blocks` must be a list of CIDR blocks"
                ))
            }
        };
        if cidrs.is_empty() {
            return Err(format!("ingress rule {n}: `cidr_blocks` is empty"));
        }
        set.entry(key).or_default().extend(cidrs);
    }
    Ok(set)
}

/// The rules EC2 reports (IPv4 CIDR sources only).
pub(crate) fn from_permissions(permissions: &[IpPermission]) -> RuleSet {
    let mut set = RuleSet::new();
    for permission in permissions {
        let cidrs: BTreeSet<String> = permission
            .ip_ranges()
            .iter()
            .filter_map(|r| r.cidr_ip().map(str::to_owned))
            .collect();
        if cidrs.is_empty() {
            continue;
        }
        let key = key(
            permission.ip_protocol().unwrap_or("-1"),
            permission.from_port(),
            permission.to_port(),
        );
        set.entry(key).or_default().extend(cidrs);
    }
    set
}

/// The rules as EC2 permissions, one per protocol/port range.
pub(crate) fn to_permissions(set: &RuleSet) -> Vec<IpPermission> {
    set.iter()
        .map(|(key, cidrs)| {
            IpPermission::builder()
                .ip_protocol(&key.protocol)
                .set_from_port(key.from_port)
                .set_to_port(key.to_port)
                .set_ip_ranges(Some(
                    cidrs
                        .iter()
                        .map(|c| IpRange::builder().cidr_ip(c).build())
                        .collect(),
                ))
                .build()
        })
        .collect()
}

/// The rules as the `ingress` attribute value.
pub(crate) fn to_value(set: &RuleSet) -> Value {
    Value::Array(
        set.iter()
            .map(|(key, cidrs)| {
                let mut rule = json!({ "protocol": key.protocol, "cidr_blocks": cidrs });
                if let Value::Object(map) = &mut rule {
                    if let Some(f) = key.from_port {
                        map.insert("from_port".into(), json!(f));
                    }
                    if let Some(t) = key.to_port {
                        map.insert("to_port".into(), json!(t));
                    }
                }
                rule
            })
            .collect(),
    )
}

/// The sources in `a` that are not in `b`.
pub(crate) fn minus(a: &RuleSet, b: &RuleSet) -> RuleSet {
    let mut out = RuleSet::new();
    for (key, cidrs) in a {
        let missing: BTreeSet<String> = match b.get(key) {
            Some(other) => cidrs.difference(other).cloned().collect(),
            None => cidrs.clone(),
        };
        if !missing.is_empty() {
            out.insert(key.clone(), missing);
        }
    }
    out
}

/// The `ingress` value in normal form; values that do not parse are left
/// alone (create and update report them).
pub(crate) fn normalize_value(value: &Value) -> Value {
    parse(Some(value)).map_or_else(|_| value.clone(), |set| to_value(&set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_merges() {
        let v = json!([
            {"protocol": "TCP", "from_port": 443, "to_port": 443, "cidr_blocks": ["10.0.0.0/8"]},
            {"protocol": "all", "from_port": 0, "to_port": 65535, "cidr_blocks": ["192.0.2.0/24"]},
            {"protocol": 6, "from_port": 22, "cidr_blocks": ["0.0.0.0/0"]},
            {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"]},
            {"protocol": "icmp", "cidr_blocks": ["0.0.0.0/0"]},
        ]);
        assert_eq!(
            normalize_value(&v),
            json!([
                {"protocol": "-1", "cidr_blocks": ["192.0.2.0/24"]},
                {"protocol": "icmp", "from_port": -1, "to_port": -1, "cidr_blocks": ["0.0.0.0/0"]},
                {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["0.0.0.0/0"]},
                {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0", "10.0.0.0/8"]},
            ])
        );
    }

    #[test]
    fn round_trips_through_permissions() {
        let set = parse(Some(&json!([
            {"protocol": "udp", "from_port": 53, "to_port": 53, "cidr_blocks": ["b/32", "a/32"]},
            {"protocol": "-1", "cidr_blocks": ["c/32"]},
        ])))
        .unwrap();
        assert_eq!(from_permissions(&to_permissions(&set)), set);
    }

    #[test]
    fn differences() {
        let a = parse(Some(
            &json!([{"protocol": "tcp", "from_port": 1, "cidr_blocks": ["x", "y"]}]),
        ))
        .unwrap();
        let b = parse(Some(
            &json!([{"protocol": "tcp", "from_port": 1, "cidr_blocks": ["y"]}]),
        ))
        .unwrap();
        let d = minus(&a, &b);
        assert_eq!(d.values().next().unwrap().iter().collect::<Vec<_>>(), ["x"]);
        assert!(minus(&b, &a).is_empty());
    }

    #[test]
    fn rejects_bad_rules() {
        for bad in [
            json!([{"protocol": "tcp", "cidr_blocks": ["0.0.0.0/0"]}]),
            json!([{"protocol": "tcp", "from_port": 1}]),
            json!([{"protocol": "tcp", "from_port": 1, "cidr_blocks": []}]),
            json!([{"from_port": 1, "cidr_blocks": ["x"]}]),
            json!([{"protocol": "tcp", "port": 1, "cidr_blocks": ["x"]}]),
            json!({"protocol": "tcp"}),
        ] {
            assert!(parse(Some(&bad)).is_err(), "{bad}");
        }
    }
}
