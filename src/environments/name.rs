//! Environment names made from branch and tag names
//! (`prov env name --from-ref REF`): slugged to what every provider
//! accepts, and shortened with a hash of the whole ref when they do not fit
//! or when slugging changed them, so two refs never share a name.

use prov_state::environment::MAX_NAME;
use sha2::{Digest, Sha256};

/// How many hex digits of the ref's hash a shortened name ends with.
const HASH_DIGITS: usize = 8;

/// The environment name for `reference` (`refs/heads/feature/Login_Page`,
/// `feature/x`, `refs/pull/42/merge`).
#[must_use]
pub fn from_ref(reference: &str) -> String {
    let short = ["refs/heads/", "refs/tags/", "refs/"]
        .iter()
        .find_map(|prefix| reference.strip_prefix(prefix))
        .unwrap_or(reference);
    let mut slug = String::with_capacity(short.len());
    for c in short.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    if slug == short && !slug.is_empty() && slug.len() <= MAX_NAME {
        return slug.to_owned();
    }
    let hash = hex::encode(Sha256::digest(reference.as_bytes()));
    let hash = &hash[..HASH_DIGITS];
    let room = MAX_NAME - HASH_DIGITS - 1;
    let head = slug
        .get(..room.min(slug.len()))
        .unwrap_or(slug)
        .trim_end_matches('-');
    if head.is_empty() {
        format!("ref-{hash}")
    } else {
        format!("{head}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_and_others_are_slugged_with_a_hash() {
        assert_eq!(from_ref("main"), "main");
        assert_eq!(from_ref("refs/heads/pr-42"), "pr-42");
        let a = from_ref("refs/heads/feature/Login_Page");
        assert!(a.starts_with("feature-login-page-"), "{a}");
        let b = from_ref("refs/heads/feature/login-page");
        assert_ne!(a, b, "two refs that slug alike get different names");
        let long = from_ref(&format!("refs/heads/{}", "x".repeat(200)));
        assert_eq!(long.len(), MAX_NAME);
        assert_eq!(from_ref("///"), format!("ref-{}", &from_ref("///")[4..]));
        for r in [
            "main",
            "a/b",
            "ÄÖ",
            "///",
            "-x-",
            &"y".repeat(100),
            "refs/pull/42/merge",
        ] {
            let name = from_ref(r);
            assert_eq!(
                prov_state::environment::check_name(&name),
                Ok(()),
                "{r} -> {name}"
            );
            assert_eq!(from_ref(r), name, "stable");
        }
    }
}
