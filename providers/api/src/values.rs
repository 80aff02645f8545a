//! Helpers over attribute values that several providers read and normalize
//! the same way: unset attributes, defaults, values kept from `read`, and
//! `authorized_keys`.

use serde_json::Value;

use crate::Attributes;

/// Whether attribute `name` is unset (absent and null are both unset).
#[must_use]
pub fn is_unset(attributes: &Attributes, name: &str) -> bool {
    attributes.get(name).is_none_or(Value::is_null)
}

/// The string attribute `name`, when set. The error is the reason, for the
/// provider to wrap in its own configuration error.
///
/// # Errors
/// When the value is not a string.
pub fn optional_string<'a>(
    attributes: &'a Attributes,
    name: &str,
) -> Result<Option<&'a str>, String> {
    match attributes.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("must be a string, not {other}")),
    }
}

/// Sets attribute `name` of `desired` to `value` when the spec leaves it
/// unset, as `read` reports the default.
pub fn set_default(desired: &mut Attributes, name: &str, value: Value) {
    if is_unset(desired, name) {
        desired.insert(name.to_owned(), value);
    }
}

/// For each of `names` the spec leaves unset, takes the value `read`
/// reported (one chosen at create: an allocated port or address, a default
/// of the API), so that it plans no change.
pub fn keep_current(desired: &mut Attributes, current: &Attributes, names: &[&str]) {
    for &name in names {
        if is_unset(desired, name) {
            if let Some(value) = current.get(name) {
                desired.insert(name.to_owned(), value.clone());
            }
        }
    }
}

/// Trims the lines of a desired `authorized_keys` attribute and drops empty
/// ones, as providers report them (so a stray space plans no change).
pub fn normalize_authorized_keys(desired: &mut Attributes) {
    if let Some(Value::Array(items)) = desired.get("authorized_keys") {
        if let Some(lines) = items.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
            desired.insert("authorized_keys".into(), key_lines(lines));
        }
    }
}

/// The `authorized_keys` attribute as `read` reports it from the text a
/// provider kept the keys in (a file, a guest property): its lines,
/// trimmed, empty ones dropped.
#[must_use]
pub fn authorized_keys_from_lines(text: &str) -> Value {
    key_lines(text.lines())
}

/// `lines` trimmed, empty ones dropped, as a JSON array.
fn key_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Value {
    Value::Array(
        lines
            .into_iter()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(Value::from)
            .collect(),
    )
}

/// The `authorized_keys` attribute of a machine-like resource (local hosts,
/// VMs): OpenSSH public key lines, trimmed, empty ones dropped. The error is
/// the reason, for the provider to wrap in its own configuration error.
///
/// # Errors
/// When the attribute is not a list of single-line strings.
pub fn authorized_keys(attributes: &Attributes) -> Result<Vec<String>, &'static str> {
    let items = match attributes.get("authorized_keys") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err("must be a list of OpenSSH public key lines"),
    };
    let mut keys = Vec::new();
    for item in items {
        let Value::String(line) = item else {
            return Err("must hold only strings");
        };
        let line = line.trim();
        if line.contains(['\n', '\r']) {
            return Err("entries must be single lines");
        }
        if !line.is_empty() {
            keys.push(line.to_owned());
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attributes(value: Value) -> Attributes {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn defaults_and_kept_values_fill_only_unset_attributes() {
        let mut desired = attributes(json!({"cpus": 2, "port": null, "keys": [" a ", ""]}));
        let current = attributes(json!({"port": 40001, "cpus": 1, "address": "x"}));
        set_default(&mut desired, "cpus", json!(1));
        set_default(&mut desired, "memory", json!(1024));
        keep_current(&mut desired, &current, &["port", "address", "absent"]);
        assert_eq!(desired["cpus"], json!(2));
        assert_eq!(desired["memory"], json!(1024));
        assert_eq!(desired["port"], json!(40001));
        assert_eq!(desired["address"], json!("x"));
        assert!(!desired.contains_key("absent"));
        assert!(is_unset(&desired, "absent") && !is_unset(&desired, "cpus"));
        assert_eq!(optional_string(&current, "address"), Ok(Some("x")));
        assert_eq!(optional_string(&current, "absent"), Ok(None));
        assert_eq!(
            optional_string(&current, "port").unwrap_err(),
            "must be a string, not 40001"
        );
    }

    #[test]
    fn key_lines_are_trimmed_and_empty_ones_dropped() {
        assert_eq!(authorized_keys_from_lines(" a \n\nb\n"), json!(["a", "b"]));
        let mut desired = attributes(json!({"authorized_keys": [" a ", "", "b"]}));
        normalize_authorized_keys(&mut desired);
        assert_eq!(desired["authorized_keys"], json!(["a", "b"]));
    }
}
