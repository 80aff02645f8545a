//! Environment variables in spec values: `${VAR}` and `${VAR:-default}`
//! (the default may itself hold `${…}`), `$$` for a literal `$`. The libvirt
//! URI, pools and image and kernel paths use them, so one spec serves
//! machines that keep their images in different places.

use super::error::{Diagnostic, ErrorKind};
use super::raw::Str;

/// Expands `${VAR}` and `${VAR:-default}` (the default may itself hold
/// `${…}`) with `lookup`; `$$` is a literal `$`.
///
/// # Errors
/// The reason: an unset variable without a default, or a malformed `${`.
pub(crate) fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let Some(body) = rest.strip_prefix('{') else {
            out.push('$');
            continue;
        };
        // The matching `}`, counting nested `${`.
        let mut depth = 1;
        let mut end = None;
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        let end = end.ok_or_else(|| format!("`${{` without a closing `}}` in `{text}`"))?;
        let inner = &body[..end];
        rest = &body[end + 1..];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{inner}}}` does not name an environment variable"
            ));
        }
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(&expand(default, lookup)?),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set (write `${{{name}:-DEFAULT}}` for a default)"
                ))
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of environment variable `name`, if it is set and Unicode.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `value` expanded; on failure a diagnostic at its span and `None`.
pub(crate) fn expanded(value: &Str, diags: &mut Vec<Diagnostic>) -> Option<String> {
    match expand(value.get_ref(), &env) {
        Ok(text) if !text.trim().is_empty() => Some(text),
        Ok(_) => {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                "this value must not be empty",
                value.span(),
            ));
            None
        }
        Err(why) => {
            diags.push(Diagnostic::new(ErrorKind::InvalidValue, why, value.span()));
            None
        }
    }
}

/// `value` expanded, without diagnostics (after the check passed).
pub(crate) fn expanded_quiet(value: &Str) -> String {
    expand(value.get_ref(), &env).unwrap_or_else(|_| value.get_ref().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/me".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_with_defaults() {
        assert_eq!(expand("a${HOME}b", &lookup).unwrap(), "a/home/meb");
        assert_eq!(expand("${NOPE:-x}", &lookup).unwrap(), "x");
        assert_eq!(expand("${EMPTY:-x}", &lookup).unwrap(), "x");
        assert_eq!(
            expand("${NOPE:-${HOME}/.cache/i.qcow2}", &lookup).unwrap(),
            "/home/me/.cache/i.qcow2"
        );
        assert_eq!(expand("$$5 and $x", &lookup).unwrap(), "$5 and $x");
        assert!(expand("${NOPE}", &lookup)
            .unwrap_err()
            .contains("`NOPE` is not set"));
        assert!(expand("${HOME", &lookup).is_err());
        assert!(expand("${a b}", &lookup).is_err());
    }
}
