//! Checks of `[outputs]`: `ADDRESS.ATTRIBUTE` naming a defined resource.

use std::ops::Range;

use prov_provider::{Address, HOST_KIND};

use super::check::{key_names, valid_name, KEY_PAIR, SECURITY_GROUP};
use super::error::{Diagnostic, ErrorKind};
use super::raw::{RawSpec, Str};
use crate::providers::Target;

/// Checks one output value; the problem, if any.
pub(crate) fn check_output(raw: &RawSpec, source: &str, value: &Str) -> Option<Diagnostic> {
    let text = value.get_ref();
    let span = value.span();
    let bad = |message: String| Diagnostic::new(ErrorKind::InvalidValue, message, span.clone());
    let Some((address, attribute)) = text.rsplit_once('.') else {
        return Some(
            bad(format!("output `{text}` is not ADDRESS.ATTRIBUTE"))
                .help("e.g. \"web[*].public_ip\" or \"key_pair.deploy.fingerprint\""),
        );
    };
    if !valid_name(attribute) {
        return Some(bad(format!("`{attribute}` is not a valid attribute name")));
    }
    let (base, star) = match address.strip_suffix("[*]") {
        Some(base) => (base, true),
        None => (address, false),
    };
    let parsed = base
        .parse::<Address>()
        .ok()
        .filter(|a| !(star && a.index.is_some()));
    let Some(parsed) = parsed else {
        return Some(
            bad(format!("`{address}` is not a resource address"))
                .help("expected NAME, NAME[N], NAME[*], key_pair.NAME or security_group.NAME"),
        );
    };
    let address_span = narrow(source, &span, text, address.len());
    if let Some(d) = resolve_output(raw, &parsed, star, address) {
        return Some(Diagnostic {
            span: address_span,
            ..d
        });
    }
    let attribute_span = narrow(source, &span, text, text.len());
    let attribute_span = if attribute_span == span {
        span
    } else {
        attribute_span.start + address.len() + 1..attribute_span.end
    };
    check_attribute(raw, &parsed, attribute).map(|d| Diagnostic {
        span: attribute_span,
        ..d
    })
}

/// The attributes the resource at `addr` has in state (`id` for every
/// resource), from its provider's schema; `None` when prov cannot know them
/// (an unknown target, reported elsewhere).
fn attributes_of(raw: &RawSpec, addr: &Address) -> Option<Vec<&'static str>> {
    let schema = match addr.kind.as_str() {
        HOST_KIND => {
            let target = raw.hosts.get(addr.name.as_str())?.target()?;
            // An existing SSH host is no provider's resource: it has no
            // attributes in state at all.
            let Some(kind) = target.host_kind() else {
                return Some(Vec::new());
            };
            target.kind_schema(kind)
        }
        kind => Target::Ec2.kind_schema(kind),
    }?;
    Some(
        std::iter::once("id")
            .chain(schema.iter().map(|a| a.name))
            .collect(),
    )
}

/// Checks that the resource an output names has `attribute`.
fn check_attribute(raw: &RawSpec, addr: &Address, attribute: &str) -> Option<Diagnostic> {
    let names = attributes_of(raw, addr)?;
    if names.contains(&attribute) {
        return None;
    }
    let what = if addr.kind == HOST_KIND {
        format!("host `{}`", addr.name)
    } else {
        format!("{} `{}`", addr.kind.replace('_', " "), addr.name)
    };
    let diagnostic = Diagnostic::new(
        ErrorKind::UndefinedReference,
        format!("output refers to attribute `{attribute}`, which {what} does not have"),
        0..0,
    );
    Some(if names.is_empty() {
        diagnostic.help(format!(
            "{what} is an existing SSH host: prov records no attributes for it"
        ))
    } else {
        let mut sorted = names;
        sorted.sort_unstable();
        diagnostic.help(format!("its attributes: {}", sorted.join(", ")))
    })
}

/// The span of the first `len` bytes of a string value when the source spells
/// it literally (no escapes); else the whole value's span.
fn narrow(source: &str, span: &Range<usize>, text: &str, len: usize) -> Range<usize> {
    let literal = source
        .get(span.clone())
        .is_some_and(|s| s.len() == text.len() + 2 && &s[1..s.len() - 1] == text);
    if literal {
        span.start + 1..span.start + 1 + len
    } else {
        span.clone()
    }
}

/// Checks that an output's address names a defined resource; returns the
/// problem (its span is replaced by the caller).
fn resolve_output(raw: &RawSpec, addr: &Address, star: bool, text: &str) -> Option<Diagnostic> {
    let undefined = |what: &str, names: Vec<&str>| {
        let help = if names.is_empty() {
            format!("no {what} are defined")
        } else {
            format!("defined {what}: {}", names.join(", "))
        };
        Some(
            Diagnostic::new(
                ErrorKind::UndefinedReference,
                format!("output refers to `{text}`, which is not defined"),
                0..0,
            )
            .help(help),
        )
    };
    let no_index = |what: &str| {
        Some(
            Diagnostic::new(
                ErrorKind::InvalidValue,
                format!(
                    "output refers to `{text}`, but {what} `{}` has no count and takes no index",
                    addr.name
                ),
                0..0,
            )
            .help(format!(
                "use `{}` without an index",
                Address {
                    index: None,
                    ..addr.clone()
                }
            )),
        )
    };
    match addr.kind.as_str() {
        HOST_KIND => {
            let Some(host) = raw.hosts.get(addr.name.as_str()) else {
                return undefined("hosts", key_names(&raw.hosts));
            };
            let count = host.count.as_ref().map(|c| *c.get_ref());
            match (count, addr.index, star) {
                (None, None, false) | (Some(_), None, true) => None,
                (None, _, _) => no_index("host"),
                (Some(n), Some(i), _) if i64::from(i) >= n => Some(
                    Diagnostic::new(
                        ErrorKind::UndefinedReference,
                        format!(
                            "output refers to `{text}`, but host `{}` has count = {n}",
                            addr.name
                        ),
                        0..0,
                    )
                    .help(if n > 0 {
                        format!("indexes run from 0 to {}", n - 1)
                    } else {
                        "the host has no instances".to_owned()
                    }),
                ),
                (Some(_), Some(_), _) => None,
                (Some(_), None, false) => Some(
                    Diagnostic::new(
                        ErrorKind::InvalidValue,
                        format!(
                            "output refers to `{text}`, but host `{}` has a count",
                            addr.name
                        ),
                        0..0,
                    )
                    .help(format!(
                        "use `{0}[*]` for every instance or `{0}[N]` for one",
                        addr.name
                    )),
                ),
            }
        }
        KEY_PAIR | SECURITY_GROUP => {
            let (what, defined) = if addr.kind == KEY_PAIR {
                ("key pairs", key_names(&raw.key_pairs))
            } else {
                ("security groups", key_names(&raw.security_groups))
            };
            if !defined.contains(&addr.name.as_str()) {
                return undefined(what, defined);
            }
            if addr.index.is_some() || star {
                return no_index(&addr.kind.replace('_', " "));
            }
            None
        }
        other => Some(
            Diagnostic::new(
                ErrorKind::UndefinedReference,
                format!("output refers to unknown resource kind `{other}`"),
                0..0,
            )
            .help("kinds: host names (no prefix), key_pair, security_group"),
        ),
    }
}
