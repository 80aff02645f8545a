//! The plan as a reviewer reads it, in the notation Terraform users know:
//! `+` create, `~` update in place, `-/+` replace, `-` destroy.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use prov_provider::{AttributeChange, Change};
use serde_json::Value;

use super::{Drift, DriftKind, Plan, ResourceChange};
use crate::ui::Painter;

/// Renders `plan` as text.
#[must_use]
pub fn render_text(plan: &Plan, paint: Painter) -> String {
    let mut out = String::new();
    if !plan.drift.is_empty() {
        out.push_str(&paint.bold("Objects changed outside prov since the last apply:"));
        out.push_str("\n\n");
        for drift in &plan.drift {
            render_drift(&mut out, drift, paint);
        }
    }
    if plan.is_empty() {
        out.push_str(&paint.green("No changes."));
        out.push_str(" The deployment matches the spec.\n");
        return out;
    }
    out.push_str(&paint.bold("prov will perform the following actions:"));
    out.push_str("\n\n");
    for moved in &plan.moved {
        let comment = format!(
            "# {} has moved to {} (the same object)",
            moved.from, moved.to
        );
        let _ = writeln!(out, "  {}", paint.dim(&comment));
        let _ = writeln!(
            out,
            "  {} {} -> {}\n",
            paint.yellow(">"),
            moved.from,
            moved.to
        );
    }
    for change in &plan.changes {
        render_change(&mut out, change, paint);
    }
    for deploy in &plan.deploys {
        render_deploy(&mut out, deploy, paint);
    }
    for certificate in &plan.certificates {
        render_certificate(&mut out, certificate, paint);
    }
    for secret in &plan.secrets {
        render_secret(&mut out, secret, paint);
    }
    let s = &plan.summary;
    let deploys = if s.deploy > 0 {
        format!(
            ", {} host{} to deploy",
            s.deploy,
            if s.deploy == 1 { "" } else { "s" }
        )
    } else {
        String::new()
    };
    let deploys = if s.secrets > 0 {
        format!(
            "{deploys}, {} secret{} to upload or delete",
            s.secrets,
            if s.secrets == 1 { "" } else { "s" }
        )
    } else {
        deploys
    };
    let deploys = if s.certificates > 0 {
        format!(
            "{deploys}, {} Kubernetes certificate{} or key{} to issue or remove",
            s.certificates,
            if s.certificates == 1 { "" } else { "s" },
            if s.certificates == 1 { "" } else { "s" }
        )
    } else {
        deploys
    };
    let deploys = match plan.moved.len() {
        0 => deploys,
        n => format!("{deploys}, {n} to move"),
    };
    let _ = writeln!(
        out,
        "{} {} to create, {} to update, {} to replace, {} to destroy{deploys}.",
        paint.bold("Plan:"),
        s.create,
        s.update,
        s.replace,
        s.delete
    );
    out
}

fn render_certificate(
    out: &mut String,
    certificate: &super::clusters::CertificateChange,
    paint: Painter,
) {
    use super::clusters::CertificateAction;
    let (sign, verb) = match certificate.action {
        CertificateAction::New => (paint.green("+"), "issued"),
        CertificateAction::Reissue => (paint.yellow("~"), "reissued"),
        CertificateAction::Remove => (paint.red("-"), "removed"),
    };
    let reason = certificate
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  # {} of cluster {} will be {verb}{reason}",
        certificate.item, certificate.cluster
    );
    let _ = writeln!(
        out,
        "  {sign} kubernetes {}/{}\n",
        certificate.cluster, certificate.item
    );
}

fn render_secret(out: &mut String, secret: &super::SecretChange, paint: Painter) {
    let (sign, verb) = match secret.action {
        super::SecretAction::Upload => (paint.green("+"), "uploaded"),
        super::SecretAction::Delete => (paint.red("-"), "deleted"),
    };
    let when = secret
        .upload
        .map(|w| format!(", {} activation", w.as_str()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  # secret {} on {} will be {verb} ({}{when})",
        secret.name, secret.address, secret.reason
    );
    let _ = writeln!(
        out,
        "  {sign} secret {} -> {}:{}\n",
        secret.name, secret.address, secret.destination
    );
}

fn render_deploy(out: &mut String, deploy: &super::DeployChange, paint: Painter) {
    let mut comment = format!(
        "# {} will get a new system ({})",
        deploy.address, deploy.goal
    );
    if let Some(reason) = &deploy.reason {
        let _ = write!(comment, "; {reason}");
    }
    let _ = writeln!(out, "  {}", paint.dim(&comment));
    let _ = writeln!(out, "  {} {} system", paint.yellow("~"), deploy.address);
    let current = deploy.current.as_deref().unwrap_or("(none)");
    let _ = writeln!(out, "      {current} -> {}", deploy.desired);
    let bytes = crate::deploy::human_bytes(deploy.bytes);
    let via = deploy.via_cache.as_ref().map_or_else(
        || " over SSH".to_owned(),
        |url| format!(" from the cache {url}"),
    );
    if deploy.exact {
        let _ = writeln!(out, "      copy {} paths ({bytes}){via}", deploy.paths);
    } else {
        let _ = writeln!(
            out,
            "      copy up to {} paths ({bytes}; the host cannot be asked yet){via}",
            deploy.paths
        );
    }
    if let Some(derivation) = &deploy.derivation {
        let _ = writeln!(out, "      build {derivation} on the host");
    }
    out.push('\n');
}

fn render_drift(out: &mut String, drift: &Drift, paint: Painter) {
    match drift.kind {
        DriftKind::Deleted => {
            let _ = writeln!(
                out,
                "  {}",
                paint.dim(&format!("# {} was deleted outside prov", drift.address))
            );
            let _ = writeln!(out, "  {} {}\n", paint.red("-"), drift.address);
        }
        DriftKind::Changed => {
            let _ = writeln!(
                out,
                "  {}",
                paint.dim(&format!("# {} was changed outside prov", drift.address))
            );
            let _ = writeln!(out, "  {} {}", paint.yellow("~"), drift.address);
            render_attributes(out, &drift.attributes, Change::Update, paint);
            out.push('\n');
        }
    }
}

fn render_change(out: &mut String, change: &ResourceChange, paint: Painter) {
    let address = &change.address;
    let (headline, symbol) = match change.action {
        Change::Create => ("will be created".to_owned(), paint.green("  +")),
        Change::Update => ("will be updated in place".to_owned(), paint.yellow("  ~")),
        Change::Replace => ("must be replaced".to_owned(), paint.magenta("-/+")),
        Change::Delete => ("will be destroyed".to_owned(), paint.red("  -")),
        Change::NoOp => return,
    };
    let mut comment = format!("# {address} {headline}");
    if let Some(reason) = &change.reason {
        let _ = write!(comment, " ({reason})");
    }
    for effect in &change.effects {
        let _ = write!(comment, "; {effect}");
    }
    let _ = writeln!(out, "  {}", paint.dim(&comment));
    let id = change
        .id
        .as_ref()
        .map(|id| format!(" ({id})"))
        .unwrap_or_default();
    let _ = writeln!(out, "{symbol} {address}{id}");
    render_attributes(out, &change.attributes, change.action, paint);
    out.push('\n');
}

fn render_attributes(
    out: &mut String,
    attributes: &[AttributeChange],
    action: Change,
    paint: Painter,
) {
    let width = attributes.iter().map(|a| a.name.len()).max().unwrap_or(0);
    for attribute in attributes {
        let name = format!("{:width$}", attribute.name);
        let forces = if attribute.forces_replacement && action == Change::Replace {
            format!(" {}", paint.magenta("# forces replacement"))
        } else {
            String::new()
        };
        let after = if attribute.after_unknown {
            "(known after apply)".to_owned()
        } else {
            attribute
                .after
                .as_ref()
                .map_or_else(|| "null".to_owned(), show)
        };
        match (&attribute.before, action) {
            (None, _) | (_, Change::Create) => {
                let _ = writeln!(out, "      {} {name} = {after}{forces}", paint.green("+"));
            }
            (Some(Value::Object(before)), _)
                if matches!(attribute.after, Some(Value::Object(_))) =>
            {
                let Some(Value::Object(after_map)) = &attribute.after else {
                    continue;
                };
                let _ = writeln!(out, "      {} {name} = {{{forces}", paint.yellow("~"));
                let keys: BTreeSet<&String> = before.keys().chain(after_map.keys()).collect();
                for key in keys {
                    match (before.get(key), after_map.get(key)) {
                        (Some(b), Some(a)) if a != b => {
                            let _ = writeln!(
                                out,
                                "          {} {} = {} -> {}",
                                paint.yellow("~"),
                                show_key(key),
                                show(b),
                                show(a)
                            );
                        }
                        (Some(b), None) => {
                            let _ = writeln!(
                                out,
                                "          {} {} = {}",
                                paint.red("-"),
                                show_key(key),
                                show(b)
                            );
                        }
                        (None, Some(a)) => {
                            let _ = writeln!(
                                out,
                                "          {} {} = {}",
                                paint.green("+"),
                                show_key(key),
                                show(a)
                            );
                        }
                        _ => {}
                    }
                }
                let _ = writeln!(out, "        }}");
            }
            (Some(before), _) if attribute.after.is_none() && !attribute.after_unknown => {
                let _ = writeln!(
                    out,
                    "      {} {name} = {}{forces}",
                    paint.red("-"),
                    show(before)
                );
            }
            (Some(before), _) => {
                let _ = writeln!(
                    out,
                    "      {} {name} = {} -> {after}{forces}",
                    paint.yellow("~"),
                    show(before)
                );
            }
        }
    }
}

fn show_key(key: &str) -> String {
    if prov_provider::is_valid_name(key) {
        key.to_owned()
    } else {
        show(&Value::from(key))
    }
}

/// A value in one line: strings quoted, lists and maps inline.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) if s.len() > 80 => {
            let cut: String = s.chars().take(60).collect();
            format!("{:?}… ({} bytes)", cut, s.len())
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", show_key(k), show(v)))
                .collect();
            if items.is_empty() {
                "{}".to_owned()
            } else {
                format!("{{ {} }}", items.join(", "))
            }
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}
