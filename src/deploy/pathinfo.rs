//! What the local Nix store records about store paths (`nix path-info
//! --json`): NAR hash and size, references, deriver, signatures, content
//! address. The copy over SSH sends it with each path, as `nix copy` does;
//! the binary cache writes it into narinfos.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

/// One store path as the local store records it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathInfo {
    /// The store path (filled in from the key where Nix lists by path).
    #[serde(default)]
    pub path: String,
    /// The NAR's hash, as Nix printed it (`sha256-BASE64`, `sha256:BASE32`).
    pub nar_hash: String,
    /// The NAR's size in bytes.
    pub nar_size: u64,
    /// The store paths it refers to.
    #[serde(default)]
    pub references: Vec<String>,
    /// The derivation that built it, when known.
    #[serde(default)]
    pub deriver: Option<String>,
    /// When it became valid (seconds since the epoch; 0 when unknown).
    #[serde(default)]
    pub registration_time: u64,
    /// Its signatures.
    #[serde(default)]
    pub signatures: Vec<String>,
    /// Its content address, for content-addressed paths.
    #[serde(default)]
    pub ca: Option<String>,
}

/// `nix path-info --json` prints a list (Nix up to 2.18) or an object keyed
/// by path (later).
#[derive(Deserialize)]
#[serde(untagged)]
enum Listing {
    List(Vec<serde_json::Value>),
    ByPath(BTreeMap<String, serde_json::Value>),
}

/// How many paths one `nix path-info` call is given.
const CHUNK: usize = 256;

/// What the local store records about `paths`, in the order given.
///
/// # Errors
/// When Nix cannot be asked, or a path is not valid locally.
pub async fn query<S: AsRef<str>>(paths: &[S]) -> Result<Vec<PathInfo>> {
    // `nix path-info` takes a `.drv` path for the derivation's outputs
    // unless told `--derivation`, which in turn takes any other path for
    // its deriver: each kind is asked on its own.
    let (derivations, others): (Vec<&str>, Vec<&str>) = paths
        .iter()
        .map(AsRef::as_ref)
        .partition(|p| p.ends_with(".drv"));
    let mut found = BTreeMap::new();
    for (kind, flag) in [(others, None), (derivations, Some("--derivation"))] {
        for chunk in kind.chunks(CHUNK) {
            let mut args = vec![
                "--extra-experimental-features",
                "nix-command",
                "path-info",
                "--json",
            ];
            args.extend(flag);
            args.extend(chunk);
            let json = super::nix::run("nix", &args).await?;
            found.extend(parse(&json)?.into_iter().map(|i| (i.path.clone(), i)));
        }
    }
    paths
        .iter()
        .map(|path| {
            found
                .get(path.as_ref())
                .cloned()
                .with_context(|| format!("nix path-info said nothing about {}", path.as_ref()))
        })
        .collect()
}

/// The closure of `path` (every path it needs, itself included) with what
/// the local store records about each, in one `nix path-info --recursive`.
///
/// # Errors
/// When Nix cannot be asked, or `path` is not valid locally.
pub async fn closure_of(path: &str) -> Result<BTreeMap<String, PathInfo>> {
    let mut args = vec![
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "--json",
        "--recursive",
    ];
    if path.ends_with(".drv") {
        args.push("--derivation");
    }
    args.push(path);
    let json = super::nix::run("nix", &args).await?;
    Ok(parse(&json)?
        .into_iter()
        .map(|info| (info.path.clone(), info))
        .collect())
}

/// The paths of a closure in dependency order (every path after the paths
/// it refers to), ties broken by name so the order is always the same.
///
/// # Errors
/// When the references form a cycle (a store never records one).
pub fn dependency_order(closure: &BTreeMap<String, PathInfo>) -> Result<Vec<String>> {
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut referrers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (path, info) in closure {
        let inside = info
            .references
            .iter()
            .filter(|r| *r != path && closure.contains_key(*r));
        let mut count = 0;
        for reference in inside {
            referrers.entry(reference).or_default().push(path);
            count += 1;
        }
        waiting.insert(path, count);
    }
    let mut ready: std::collections::BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(path, _)| *path)
        .collect();
    let mut order = Vec::with_capacity(closure.len());
    while let Some(path) = ready.pop_first() {
        order.push(path.to_owned());
        for referrer in referrers.get(path).into_iter().flatten() {
            if let Some(count) = waiting.get_mut(referrer) {
                *count -= 1;
                if *count == 0 {
                    ready.insert(referrer);
                }
            }
        }
    }
    if order.len() != closure.len() {
        bail!("the store's references form a cycle");
    }
    Ok(order)
}

/// Reads `nix path-info --json` output, either shape.
///
/// # Errors
/// When it is not what Nix prints.
pub fn parse(json: &str) -> Result<Vec<PathInfo>> {
    let listing: Listing = serde_json::from_str(json).context("reading nix path-info --json")?;
    let entries: Vec<(Option<String>, serde_json::Value)> = match listing {
        Listing::List(entries) => entries.into_iter().map(|e| (None, e)).collect(),
        Listing::ByPath(by_path) => by_path.into_iter().map(|(p, e)| (Some(p), e)).collect(),
    };
    entries
        .into_iter()
        .map(|(key, entry)| {
            let path = key
                .or_else(|| {
                    entry
                        .get("path")
                        .and_then(|p| p.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            // A path the store does not have: `"valid": false` (or null
            // where Nix lists by path), and nothing else.
            if entry.is_null() || entry.get("valid") == Some(&serde_json::Value::Bool(false)) {
                bail!("{path} is not valid in the local Nix store");
            }
            let info: PathInfo = serde_json::from_value(entry)
                .with_context(|| format!("reading nix path-info --json about {path}"))?;
            Ok(PathInfo { path, ..info })
        })
        .collect()
}

impl PathInfo {
    /// The NAR hash as bare base16, the form every Nix since 2.0 reads from
    /// the serve protocol (what `nix copy` sends).
    ///
    /// # Errors
    /// When the hash is not a SHA-256 hash in a form Nix prints.
    pub fn nar_hash_base16(&self) -> Result<String> {
        sha256_base16(&self.nar_hash)
            .with_context(|| format!("the NAR hash of {} (`{}`)", self.path, self.nar_hash))
    }
}

/// `sha256-BASE64` (SRI), `sha256:BASE32`, `sha256:BASE16` or any of them
/// bare, as base16.
fn sha256_base16(hash: &str) -> Result<String> {
    let (algorithm, digest) = hash
        .split_once('-')
        .or_else(|| hash.split_once(':'))
        .unwrap_or(("sha256", hash));
    if algorithm != "sha256" {
        bail!("not a SHA-256 hash");
    }
    let bytes = match digest.len() {
        64 => hex::decode(digest).ok(),
        52 => nix_base32::from_nix_base32(digest),
        44 => base64::engine::general_purpose::STANDARD
            .decode(digest)
            .ok(),
        _ => None,
    };
    match bytes {
        Some(bytes) if bytes.len() == 32 => Ok(hex::encode(bytes)),
        _ => bail!("not a SHA-256 digest in base16, Nix base32 or base64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One hash in every form Nix prints it (`nix hash to-base32` and
    // `to-sri` of the base16 form, Nix 2.8).
    const BASE16: &str = "1e4c27232199fabf73b3f8435de3249edca7ac866916807bea1f01de86855991";

    #[test]
    fn every_printed_form_of_a_hash_reads_as_the_same_base16() {
        for form in [
            "sha256-HkwnIyGZ+r9zs/hDXeMkntynrIZpFoB76h8B3oaFWZE=",
            "sha256:14arhn3dw08zx9xq05k9hsnagp4y4kimshzqndrvzylr44ijfk0y",
            &format!("sha256:{BASE16}"),
            BASE16,
        ] {
            assert_eq!(sha256_base16(form).unwrap(), BASE16, "{form}");
        }
        for bad in ["md5:abc", "sha256:xyz", "sha512-AAAA", ""] {
            assert!(sha256_base16(bad).is_err(), "{bad}");
        }
    }

    fn node(path: &str, references: &[&str]) -> (String, PathInfo) {
        let info = PathInfo {
            path: path.to_owned(),
            nar_hash: String::new(),
            nar_size: 1,
            references: references.iter().map(|r| (*r).to_owned()).collect(),
            deriver: None,
            registration_time: 0,
            signatures: Vec::new(),
            ca: None,
        };
        (path.to_owned(), info)
    }

    #[test]
    fn a_closure_is_ordered_dependencies_first() {
        // top -> {b, c}, b -> {a, b (itself)}, c -> {a}
        let closure: BTreeMap<String, PathInfo> = [
            node("/nix/store/t-top", &["/nix/store/b-b", "/nix/store/c-c"]),
            node("/nix/store/b-b", &["/nix/store/a-a", "/nix/store/b-b"]),
            node("/nix/store/c-c", &["/nix/store/a-a"]),
            node("/nix/store/a-a", &[]),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            dependency_order(&closure).unwrap(),
            [
                "/nix/store/a-a",
                "/nix/store/b-b",
                "/nix/store/c-c",
                "/nix/store/t-top"
            ]
        );
        let cycle: BTreeMap<String, PathInfo> = [
            node("/nix/store/x-x", &["/nix/store/y-y"]),
            node("/nix/store/y-y", &["/nix/store/x-x"]),
        ]
        .into_iter()
        .collect();
        assert!(dependency_order(&cycle).is_err());
    }

    #[test]
    fn both_shapes_of_the_listing_are_read() {
        let list = r#"[{"path":"/nix/store/a-x","narHash":"sha256:1","narSize":8,
            "references":["/nix/store/b-y"],"deriver":"/nix/store/c-x.drv",
            "registrationTime":7,"ultimate":true,"signatures":["k:s"]}]"#;
        let by_path = r#"{"/nix/store/a-x":{"narHash":"sha256:1","narSize":8,
            "references":["/nix/store/b-y"],"deriver":"/nix/store/c-x.drv",
            "registrationTime":7,"ultimate":true,"signatures":["k:s"],"ca":null}}"#;
        let expected = PathInfo {
            path: "/nix/store/a-x".into(),
            nar_hash: "sha256:1".into(),
            nar_size: 8,
            references: vec!["/nix/store/b-y".into()],
            deriver: Some("/nix/store/c-x.drv".into()),
            registration_time: 7,
            signatures: vec!["k:s".into()],
            ca: None,
        };
        assert_eq!(parse(list).unwrap(), std::slice::from_ref(&expected));
        assert_eq!(parse(by_path).unwrap(), [expected]);
        let gone = r#"[{"path":"/nix/store/a-x","valid":false}]"#;
        let error = parse(gone).unwrap_err().to_string();
        assert!(error.contains("/nix/store/a-x is not valid"), "{error}");
        let gone = r#"{"/nix/store/a-x":null}"#;
        assert!(parse(gone).is_err());
    }
}
