//! The providers' own rules for the resource a host becomes (one set of
//! rules, each provider's), shown at the spec values they come from.

use std::ops::Range;

use prov_provider::{Attributes, ProblemKind};

use super::error::{Diagnostic, ErrorKind};
use super::raw::{RawHost, Str};

/// Checks `attributes`, the resource host `name` becomes, by its target's
/// rules: each problem is shown where `span_of` says the spec writes its
/// attribute (at the host's name when it does not), a missing attribute as
/// one the host needs. Problems at attributes `skip` names are left out
/// (the caller reported them already).
pub(crate) fn check(
    name: &Str,
    host: &RawHost,
    attributes: &Attributes,
    span_of: &dyn Fn(&str) -> Option<Range<usize>>,
    skip: &dyn Fn(&str) -> bool,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(target) = host.target() else {
        return;
    };
    let host_name = name.get_ref();
    for problem in target.check_host_attributes(attributes) {
        // The machine's name is made of the deployment's and the host's
        // names, which are checked on their own.
        if problem.attribute == "name" || skip(problem.attribute) {
            continue;
        }
        let span = span_of(problem.attribute).unwrap_or_else(|| name.span());
        let diagnostic = match problem.kind {
            ProblemKind::Missing => Diagnostic::new(
                ErrorKind::MissingField,
                format!(
                    "host `{host_name}` needs `{}` (target {target})",
                    problem.attribute
                ),
                name.span(),
            ),
            ProblemKind::Invalid => Diagnostic::new(ErrorKind::InvalidValue, problem.message, span),
            ProblemKind::Conflict => Diagnostic::new(ErrorKind::Conflict, problem.message, span),
        };
        diags.push(match problem.help {
            Some(help) => diagnostic.help(help),
            None => diagnostic,
        });
    }
}
