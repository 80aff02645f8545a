//! Secret text (private keys in PEM, the encryption key, the k3s token):
//! zeroed when dropped, never shown by `Debug`.

use std::fmt;

use zeroize::Zeroizing;

/// A secret string. `Debug` prints only its length; reading it takes an
/// explicit [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `text`.
    #[must_use]
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// The secret text.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_text() {
        let secret = Secret::new("-----BEGIN PRIVATE KEY-----".into());
        assert_eq!(format!("{secret:?}"), "Secret(27 bytes)");
        assert_eq!(secret.expose(), "-----BEGIN PRIVATE KEY-----");
    }
}
