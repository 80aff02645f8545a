//! The pure, schema-driven diff between desired and current attributes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AttributeSchema, Attributes, Desired, UpdateMode};

/// One attribute that differs between what exists and what the spec wants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeChange {
    /// Attribute name.
    pub name: String,
    /// The current value (absent when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The desired value (absent when unset or not known until apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// The desired value will be known only after apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_unknown: bool,
    /// Changing this attribute destroys and recreates the object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forces_replacement: bool,
}

/// What has to happen to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Nothing.
    NoOp,
    /// Create a new object.
    Create,
    /// Change the object in place.
    Update,
    /// Destroy the object and create a new one.
    Replace,
    /// Destroy the object.
    Delete,
}

/// Compares `desired` with `current` attribute by attribute, following
/// `schema`. Computed attributes are never compared; attributes not in the
/// schema are ignored. The result is in schema order.
#[must_use]
pub fn diff_attributes(
    schema: &[AttributeSchema],
    desired: &Desired,
    current: &Attributes,
) -> Vec<AttributeChange> {
    let mut changes = Vec::new();
    for attribute in schema {
        if attribute.mode == UpdateMode::Computed {
            continue;
        }
        let name = attribute.name;
        let before = current.get(name).filter(|v| !v.is_null());
        let forces_replacement = attribute.mode == UpdateMode::ForceNew;
        if desired.unknown.contains(name) {
            changes.push(AttributeChange {
                name: name.to_owned(),
                before: before.cloned(),
                after: None,
                after_unknown: true,
                forces_replacement,
            });
            continue;
        }
        let after = desired.attributes.get(name).filter(|v| !v.is_null());
        if !same(before, after) {
            changes.push(AttributeChange {
                name: name.to_owned(),
                before: before.cloned(),
                after: after.cloned(),
                after_unknown: false,
                forces_replacement,
            });
        }
    }
    changes
}

/// Equality where an empty list, an empty map and an unset value are the same
/// thing (providers report "no tags" in all three ways).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let empty = |v: Option<&Value>| match v {
        None => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    };
    if empty(a) && empty(b) {
        return true;
    }
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: &[AttributeSchema] = &[
        AttributeSchema::force_new("ami"),
        AttributeSchema::in_place("instance_type"),
        AttributeSchema::in_place("tags"),
        AttributeSchema::computed("public_ip"),
    ];

    fn attrs(v: Value) -> Attributes {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn no_change_when_equal() {
        let current =
            attrs(json!({"ami": "a", "instance_type": "t3", "tags": {}, "public_ip": "1.2.3.4"}));
        let desired = Desired {
            attributes: attrs(json!({"ami": "a", "instance_type": "t3"})),
            unknown: Default::default(),
        };
        assert!(diff_attributes(SCHEMA, &desired, &current).is_empty());
    }

    #[test]
    fn marks_forcing_and_in_place() {
        let current = attrs(json!({"ami": "a", "instance_type": "t3"}));
        let desired = Desired {
            attributes: attrs(json!({"ami": "b", "instance_type": "t3.large"})),
            unknown: Default::default(),
        };
        let changes = diff_attributes(SCHEMA, &desired, &current);
        assert_eq!(changes.len(), 2);
        assert!(changes[0].forces_replacement && changes[0].name == "ami");
        assert!(!changes[1].forces_replacement && changes[1].name == "instance_type");
    }

    #[test]
    fn unknown_is_a_change() {
        let current = attrs(json!({"ami": "a"}));
        let desired = Desired {
            attributes: attrs(json!({})),
            unknown: ["ami".to_owned()].into(),
        };
        let changes = diff_attributes(SCHEMA, &desired, &current);
        assert!(changes[0].after_unknown && changes[0].forces_replacement);
    }
}
