//! The spec front end: reads a deployment spec (TOML for now), checks it and
//! converts it into the [`Spec`] model, with located, rustc-style errors.

pub mod cache;
mod check;
mod check_deploy;
mod check_kube;
mod check_libvirt;
mod check_secrets;
mod check_virtualbox;
mod convert;
pub mod environments;
mod error;
mod expand;
mod graph;
pub mod host;
mod ingress;
pub mod kubernetes;
pub mod model;
pub mod moved;
mod nix;
mod output;
mod provider_rules;
mod raw;
mod raw_deploy;
mod raw_kube;
mod raw_secrets;
pub mod secrets;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ErrorKind, Located, SpecError};
pub use host::{
    BuildOn, DeploySettings, DeploySpec, Goal, HealthSpec, JumpSpec, OnFailure, SshSpec,
    SystemSource,
};
pub use model::{HostInfo, OutputSpec, ProviderSettings, Spec, StateSettings, Target};

pub use check_secrets::allow_missing_secret_files;
pub use secrets::{Placement, SecretSpec, UploadWhen, HOSTS_RECIPIENT};

use error::Diagnostic;

/// Reads and parses the spec at `path`; the extension picks the format:
/// `.toml`, or `.nix` (and `PATH#ATTR` flake references), which Nix evaluates
/// to the same schema.
pub fn load(path: &Path) -> Result<Spec, SpecError> {
    if nix::is_nix(path) {
        return nix::load(path);
    }
    if path.extension().and_then(|e| e.to_str()) != Some("toml") {
        return Err(SpecError::UnsupportedFormat {
            path: path.to_owned(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| SpecError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_toml_bytes(&bytes, path)
}

/// Parses a TOML spec from bytes, reporting non-UTF-8 input as a located error.
pub fn parse_toml_bytes(bytes: &[u8], path: &Path) -> Result<Spec, SpecError> {
    match std::str::from_utf8(bytes) {
        Ok(source) => parse_toml(source, path),
        Err(e) => {
            let at = e.valid_up_to();
            let lossy = String::from_utf8_lossy(bytes);
            let d = Diagnostic::new(
                ErrorKind::Encoding,
                "the spec is not valid UTF-8",
                at..at + 1,
            )
            .help("save the file as UTF-8");
            Err(SpecError::invalid(path, &lossy, vec![d]))
        }
    }
}

/// Parses a TOML spec; `path` is used in messages and to resolve relative
/// paths (`public_key_file`, `user_data_file`, `[state] path`).
pub fn parse_toml(source: &str, path: &Path) -> Result<Spec, SpecError> {
    let raw: raw::RawSpec =
        toml::from_str(source).map_err(|e| SpecError::invalid(path, source, vec![syntax(&e)]))?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new(""));
    let checked = check::check(&raw, source, base_dir)
        .map_err(|diags| SpecError::invalid(path, source, diags))?;
    let hash = prov_provider::sha256_hex(source.as_bytes());
    Ok(convert::convert(&raw, &checked, path, base_dir, hash))
}

/// Turns a toml error (syntax, unknown key, wrong type) into a diagnostic.
fn syntax(e: &toml::de::Error) -> Diagnostic {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
        .replace("expected i64", "expected an integer");
    let span = e.span().unwrap_or(0..0);
    if let Some((head, expected)) = message
        .strip_prefix("unknown field")
        .and_then(|_| message.split_once(", expected "))
    {
        return Diagnostic::new(ErrorKind::Syntax, head, span).help(format!("expected {expected}"));
    }
    let d = Diagnostic::new(ErrorKind::Syntax, message.clone(), span);
    if message == "missing field `deployment`" {
        d.help("start the spec with `deployment = \"NAME\"`")
    } else {
        d
    }
}
