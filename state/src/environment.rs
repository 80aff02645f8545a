//! Environment names: what `prov env up NAME` accepts. They become part of
//! state keys and directories, object names and tags, so they are short
//! and plain: lowercase ASCII letters, digits and `-`, starting and ending
//! with a letter or digit, at most [`MAX_NAME`] characters.

/// The longest environment name (room is left in provider name limits for
/// the deployment and the host's name beside it).
pub const MAX_NAME: usize = 32;

/// Checks an environment name.
///
/// # Errors
/// A message saying what is wrong with `name`.
pub fn check_name(name: &str) -> Result<(), String> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends = name
        .bytes()
        .next()
        .zip(name.bytes().last())
        .is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
    if plain && ends && name.len() <= MAX_NAME {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an environment name: use 1-{MAX_NAME} lowercase letters, digits \
             and `-`, starting and ending with a letter or digit (`prov env name --from-ref \
             REF` makes one from a branch name)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "pr-42", "feature-x-1a2b3c4d", &"a".repeat(MAX_NAME)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a/b",
            "..",
            "a.b",
            &"a".repeat(MAX_NAME + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
