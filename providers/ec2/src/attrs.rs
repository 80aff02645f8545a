//! Reading typed values out of JSON attributes.

use prov_provider::{Attributes, Observed, ProviderError};
use serde_json::Value;

use crate::error::config_error;

/// The string value of `name`, if set (null and absent are both unset).
pub(crate) fn opt_str<'a>(
    attributes: &'a Attributes,
    kind: &str,
    name: &str,
) -> Result<Option<&'a str>, ProviderError> {
    prov_provider::optional_string(attributes, name)
        .map_err(|why| config_error(format!("{kind} attribute `{name}` {why}")))
}

/// The string value of `name`, which must be set.
pub(crate) fn req_str<'a>(
    attributes: &'a Attributes,
    kind: &str,
    name: &str,
) -> Result<&'a str, ProviderError> {
    opt_str(attributes, kind, name)?
        .ok_or_else(|| config_error(format!("{kind} needs the attribute `{name}`")))
}

/// A list of strings (absent = empty), sorted and without duplicates.
pub(crate) fn str_set(
    attributes: &Attributes,
    kind: &str,
    name: &str,
) -> Result<Vec<String>, ProviderError> {
    let bad = || {
        config_error(format!(
            "{kind} attribute `{name}` must be a list of strings"
        ))
    };
    let mut out: Vec<String> = match attributes.get(name) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    out.sort();
    out.dedup();
    Ok(out)
}

/// `Some(s)` as a JSON string, `None` (or an empty string) as null.
pub(crate) fn str_or_null(value: Option<&str>) -> Value {
    match value {
        Some(s) if !s.is_empty() => Value::String(s.to_owned()),
        _ => Value::Null,
    }
}

/// Sorted, deduplicated strings as a JSON array.
pub(crate) fn str_array<I, S>(items: I) -> Value
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut v: Vec<String> = items.into_iter().map(Into::into).collect();
    v.sort();
    v.dedup();
    Value::Array(v.into_iter().map(Value::String).collect())
}

/// `observed` with attribute `name` set to `value` (when given): what EC2
/// never reports back, kept from the request.
pub(crate) fn with_unreported(
    mut observed: Observed,
    name: &str,
    value: Option<Value>,
) -> Observed {
    if let Some(value) = value {
        observed.attributes.insert(name.to_owned(), value);
    }
    observed
}
