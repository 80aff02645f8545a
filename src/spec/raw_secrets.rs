//! Raw (spanned) `[secrets.NAME]` tables.

use serde::Deserialize;

use super::raw::{Str, StrList};

/// `[secrets.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecret {
    /// The age-encrypted file, relative to the spec's directory.
    pub file: Str,
    /// Where the plaintext goes on the hosts (default `/run/keys/NAME`).
    pub destination: Option<Str>,
    /// Owner on the hosts (default `root`).
    pub owner: Option<Str>,
    /// Group on the hosts (default `root`).
    pub group: Option<Str>,
    /// Octal mode as a string (default `"0400"`).
    pub mode: Option<Str>,
    /// Which hosts receive it: names, globs, `@tag`, `@key=value`.
    pub hosts: StrList,
    /// `before` (default: before activation) or `after` (after confirmation).
    pub upload: Option<Str>,
    /// Who can decrypt the file: `age1…`, `ssh-ed25519 …`, `ssh-rsa …`, or
    /// `@hosts` (each receiving host's pinned host key).
    pub recipients: StrList,
}
