//! Problems with desired attributes, found before any API call: each names
//! the attribute it is about, so a front end can show it where it was
//! written.

use crate::Address;

/// What kind of problem an [`AttributeProblem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A required attribute is not set.
    Missing,
    /// A value of the wrong type, out of range or not among the allowed ones.
    Invalid,
    /// Attributes that exclude each other are set together.
    Conflict,
}

/// Why desired attributes cannot make a resource of their kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AttributeProblem {
    /// The attribute the problem is shown at.
    pub attribute: &'static str,
    /// What kind of problem it is.
    pub kind: ProblemKind,
    /// What is wrong, naming the attributes involved.
    pub message: String,
    /// How to put it right, when there is more to say than the message.
    pub help: Option<String>,
}

impl AttributeProblem {
    /// A problem of `kind` at `attribute`, without help.
    #[must_use]
    pub fn new(attribute: &'static str, kind: ProblemKind, message: impl Into<String>) -> Self {
        Self {
            attribute,
            kind,
            message: message.into(),
            help: None,
        }
    }

    /// `attribute` is required and not set.
    #[must_use]
    pub fn missing(attribute: &'static str) -> Self {
        Self::new(
            attribute,
            ProblemKind::Missing,
            format!("`{attribute}` is required"),
        )
    }

    /// Adds how to put it right.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Why a provider refuses the attributes of `kind` `resource`: the first
    /// of `problems` (`vm `web[0]`: `cpus` must be …`).
    #[must_use]
    pub fn refusal(kind: &str, resource: &Address, problems: &[Self]) -> String {
        let first = problems
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        format!("{kind} `{resource}`: {first}")
    }
}
