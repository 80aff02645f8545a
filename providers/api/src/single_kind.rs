//! [`SingleKind`]: the one resource kind of a provider that manages one
//! (VMs, local hosts, the fake's things), and the checks every method of
//! such a provider starts with.

use crate::{AttributeSchema, ProviderError};

/// A provider's one resource kind: its name, its provider's name and its
/// attributes.
#[derive(Debug, Clone, Copy)]
pub struct SingleKind {
    /// The provider's name as the spec writes it (`libvirt`).
    pub provider: &'static str,
    /// The kind's name (`vm`).
    pub kind: &'static str,
    /// The kind's attributes.
    pub schema: &'static [AttributeSchema],
}

impl SingleKind {
    /// The attributes of `kind`, known without a provider (spec checks);
    /// `None` for any other kind.
    #[must_use]
    pub fn schema_of(&self, kind: &str) -> Option<&'static [AttributeSchema]> {
        (kind == self.kind).then_some(self.schema)
    }

    /// Checks that `kind` is this kind.
    ///
    /// # Errors
    /// [`ProviderError::UnknownKind`] for any other kind.
    pub fn check(&self, kind: &str) -> Result<(), ProviderError> {
        if kind == self.kind {
            Ok(())
        } else {
            Err(ProviderError::unknown_kind(self.provider, kind))
        }
    }

    /// The attributes of `kind`, for [`crate::Provider::schema`].
    ///
    /// # Errors
    /// [`ProviderError::UnknownKind`] for any other kind.
    pub fn schema(&self, kind: &str) -> Result<&'static [AttributeSchema], ProviderError> {
        self.check(kind).map(|()| self.schema)
    }

    /// The error for object `id` of this kind that does not exist.
    #[must_use]
    pub fn not_found(&self, id: &str) -> ProviderError {
        ProviderError::not_found(self.kind, id)
    }

    /// Checks the name of the deployment whose objects the provider will
    /// manage (it becomes part of their names).
    ///
    /// # Errors
    /// [`ProviderError::Config`] unless the name is letters, digits, `-`
    /// and `_`, starting with a letter.
    pub fn check_deployment(&self, deployment: &str) -> Result<(), ProviderError> {
        if crate::is_valid_name(deployment) {
            Ok(())
        } else {
            Err(ProviderError::Config {
                provider: self.provider.to_owned(),
                message: format!(
                    "deployment name `{deployment}` must be letters, digits, `-` and `_`, starting with a letter"
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THING: SingleKind = SingleKind {
        provider: "fake",
        kind: "thing",
        schema: &[AttributeSchema::in_place("size")],
    };

    #[test]
    fn checks_the_kind_and_the_deployment() {
        assert_eq!(THING.schema("thing").unwrap().len(), 1);
        assert!(THING.schema_of("thing").is_some());
        assert!(THING.schema_of("vm").is_none());
        assert!(matches!(
            THING.schema("vm"),
            Err(ProviderError::UnknownKind { .. })
        ));
        assert!(matches!(
            THING.not_found("t-1"),
            ProviderError::NotFound { kind, id } if kind == "thing" && id == "t-1"
        ));
        THING.check_deployment("dev-1").unwrap();
        let error = THING.check_deployment("1 bad").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid fake configuration: deployment name `1 bad` must be letters, digits, `-` and `_`, starting with a letter"
        );
    }
}
