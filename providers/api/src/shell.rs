//! Quoting for a POSIX shell: the one rule every command prov writes (remote
//! commands, local host scripts) follows.

/// Quotes `word` for a POSIX shell: `it's` becomes `'it'\''s'`; a word of
/// only characters no shell treats specially stays as it is (`web-0`,
/// `/run/keys/db.key`), so commands read as a person would type them.
#[must_use]
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@%+,".contains(&b));
    if plain {
        word.to_owned()
    } else {
        quote_always(word)
    }
}

/// Quotes `word` in single quotes even when it needs none (scripts whose
/// every path is quoted the same way, whatever it holds).
#[must_use]
pub fn quote_always(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        // Moved from the SSH layer, which re-exports `quote` under this name.
        use super::quote as shell_quote;
        assert_eq!(shell_quote("plain"), "plain");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn always_quoting() {
        assert_eq!(quote_always("plain"), "'plain'");
        assert_eq!(quote_always("it's"), r"'it'\''s'");
    }
}
