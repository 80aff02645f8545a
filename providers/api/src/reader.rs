//! Reading desired attributes into a provider's typed request, collecting
//! every problem (each named by its attribute) instead of stopping at the
//! first: the one set of rules serves the spec check, which shows every
//! problem at its source, and the provider, which refuses with the first.

use std::ops::RangeInclusive;

use serde_json::Value;

use crate::{AttributeProblem, Attributes, ProblemKind};

/// Reads attributes and keeps what is wrong with them.
#[derive(Debug)]
pub struct AttributeReader<'a> {
    attributes: &'a Attributes,
    problems: Vec<AttributeProblem>,
}

impl<'a> AttributeReader<'a> {
    /// A reader of `attributes`, with no problem found yet.
    #[must_use]
    pub fn new(attributes: &'a Attributes) -> Self {
        Self {
            attributes,
            problems: Vec::new(),
        }
    }

    /// Whether attribute `name` is set (absent and null are both unset).
    #[must_use]
    pub fn is_set(&self, name: &str) -> bool {
        self.attributes.get(name).is_some_and(|v| !v.is_null())
    }

    /// Records a value of `name` that cannot be used.
    pub fn invalid(&mut self, name: &'static str, message: String) {
        self.problems
            .push(AttributeProblem::new(name, ProblemKind::Invalid, message));
    }

    /// Records attributes that exclude each other, shown at `at`.
    pub fn conflict(&mut self, at: &'static str, message: String) {
        self.problems
            .push(AttributeProblem::new(at, ProblemKind::Conflict, message));
    }

    /// The string `name`, when set: non-empty and on one line.
    pub fn optional_string(&mut self, name: &'static str) -> Option<String> {
        match self.attributes.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() && !s.contains(['\n', '\r', '\0']) => {
                Some(s.clone())
            }
            Some(other) => {
                self.invalid(
                    name,
                    format!("`{name}` must be a non-empty single-line string, not {other}"),
                );
                None
            }
        }
    }

    /// The string `name`, which must be set (`help` says what it names).
    pub fn required_string(&mut self, name: &'static str, help: &str) -> String {
        if !self.is_set(name) {
            self.problems
                .push(AttributeProblem::missing(name).help(help));
        }
        self.optional_string(name).unwrap_or_default()
    }

    /// The integer `name`, when set, within `range`.
    pub fn number(&mut self, name: &'static str, range: RangeInclusive<u64>) -> Option<u64> {
        let value = self.attributes.get(name).filter(|v| !v.is_null())?;
        let number = value.as_u64().filter(|n| range.contains(n));
        if number.is_none() {
            self.invalid(
                name,
                format!(
                    "`{name}` must be from {} to {} (got {value})",
                    range.start(),
                    range.end()
                ),
            );
        }
        number
    }

    /// The boolean `name`; unset is false.
    pub fn boolean(&mut self, name: &'static str) -> bool {
        match self.attributes.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.invalid(name, format!("`{name}` must be true or false, not {other}"));
                false
            }
        }
    }

    /// The `authorized_keys` lines (see [`crate::authorized_keys`]).
    pub fn authorized_keys(&mut self) -> Vec<String> {
        crate::authorized_keys(self.attributes).unwrap_or_else(|why| {
            self.invalid("authorized_keys", format!("`authorized_keys` {why}"));
            Vec::new()
        })
    }

    /// `value` when nothing was wrong, else every problem found.
    ///
    /// # Errors
    /// The problems, in the order they were found.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<AttributeProblem>> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self.problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_every_problem_with_its_attribute() {
        let attributes: Attributes = serde_json::from_value(json!({
            "name": "a\nb", "cpus": 0, "on": "yes", "keys": 1, "ok": "fine", "n": 3,
        }))
        .unwrap();
        let mut reader = AttributeReader::new(&attributes);
        assert_eq!(reader.optional_string("ok").as_deref(), Some("fine"));
        assert_eq!(reader.number("n", 1..=5), Some(3));
        assert_eq!(reader.optional_string("name"), None);
        assert_eq!(reader.number("cpus", 1..=4), None);
        assert!(!reader.boolean("on"));
        assert_eq!(reader.required_string("base", "a file"), "");
        let problems = reader.finish(()).unwrap_err();
        let at: Vec<(&str, ProblemKind)> = problems.iter().map(|p| (p.attribute, p.kind)).collect();
        assert_eq!(
            at,
            [
                ("name", ProblemKind::Invalid),
                ("cpus", ProblemKind::Invalid),
                ("on", ProblemKind::Invalid),
                ("base", ProblemKind::Missing),
            ]
        );
        assert_eq!(problems[1].message, "`cpus` must be from 1 to 4 (got 0)");
        assert_eq!(problems[3].help.as_deref(), Some("a file"));
    }
}
