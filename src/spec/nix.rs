//! The Nix front end: a `.nix` spec (or a flake reference `PATH#ATTR`) is
//! evaluated by Nix to JSON with the same schema as the TOML spec, then
//! checked by the same code. Nix's own errors, with file and line, are shown
//! as Nix prints them; schema errors point into the evaluated form, written
//! next to the spec as `NAME.nix.evaluated.toml` (only when there is an
//! error), so that its line and column mean something.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{parse_toml, Spec, SpecError};

/// Whether `path` names a Nix spec.
pub(crate) fn is_nix(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "nix") || path.to_string_lossy().contains('#')
}

/// Evaluates and checks a Nix spec.
pub(crate) fn load(path: &Path) -> Result<Spec, SpecError> {
    let name = path.to_string_lossy().into_owned();
    let (program, args): (&str, Vec<String>) = if name.contains('#') {
        (
            "nix",
            vec![
                "--extra-experimental-features".into(),
                "nix-command flakes".into(),
                "eval".into(),
                "--json".into(),
                name.clone(),
            ],
        )
    } else {
        if !path.exists() {
            return Err(SpecError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        (
            "nix-instantiate",
            vec![
                "--eval".into(),
                "--strict".into(),
                "--json".into(),
                name.clone(),
            ],
        )
    };
    let output = Command::new(program)
        .args(&args)
        .output()
        .map_err(|e| SpecError::Nix {
            source_name: name.clone(),
            message: format!("cannot run `{program}`: {e} (is Nix installed?)"),
        })?;
    if !output.status.success() {
        return Err(SpecError::Nix {
            source_name: name,
            message: String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_owned(),
        });
    }
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| SpecError::Nix {
            source_name: name.clone(),
            message: format!("Nix printed something that is not JSON: {e}"),
        })?;
    let toml_text = to_toml(&json).map_err(|message| SpecError::Nix {
        source_name: name.clone(),
        message,
    })?;
    let evaluated = evaluated_path(path);
    let spec = parse_toml(&toml_text, &evaluated);
    match spec {
        Ok(mut spec) => {
            spec.source = path.to_owned();
            Ok(spec)
        }
        Err(error) => {
            // Leave the evaluated form where the error's location points,
            // private like the spec's other outputs (it may name secrets).
            let _ = crate::atomic::write_atomic(&evaluated, toml_text.as_bytes());
            Err(error)
        }
    }
}

/// `DIR/NAME.nix.evaluated.toml`: the same directory, so relative paths in the
/// spec resolve as they do for the `.nix` file.
fn evaluated_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(
        || "spec".to_owned(),
        |n| n.to_string_lossy().replace('#', "-"),
    );
    path.with_file_name(format!("{name}.evaluated.toml"))
}

/// Renders the evaluated JSON as TOML; `null` (which TOML lacks) is an error
/// naming the key.
fn to_toml(json: &serde_json::Value) -> Result<String, String> {
    fn find_null(value: &serde_json::Value, at: &str) -> Option<String> {
        match value {
            serde_json::Value::Null => Some(at.to_owned()),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| find_null(v, &format!("{at}[{i}]"))),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
                let key = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                find_null(v, &key)
            }),
            _ => None,
        }
    }
    if let Some(at) = find_null(json, "") {
        return Err(format!("`{at}` is null; leave the attribute out instead"));
    }
    if !json.is_object() {
        return Err("the spec must evaluate to an attribute set".to_owned());
    }
    let value = toml::Value::try_from(json)
        .map_err(|e| format!("the evaluated spec cannot be read: {e}"))?;
    toml::to_string(&value).map_err(|e| format!("the evaluated spec cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nested_json_as_toml() {
        let json = serde_json::json!({"deployment": "x", "hosts": {"web": {"target": "ssh", "count": 2, "tags": {"a": "b"}}}});
        let text = to_toml(&json).unwrap();
        let back: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(back["hosts"]["web"]["count"].as_integer(), Some(2));
    }

    #[test]
    fn null_is_named() {
        let json = serde_json::json!({"deployment": "x", "hosts": {"web": {"ami": null}}});
        assert_eq!(
            to_toml(&json).unwrap_err(),
            "`hosts.web.ami` is null; leave the attribute out instead"
        );
    }
}
