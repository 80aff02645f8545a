//! The desired configuration of one resource, as the spec gives it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Address, DerivedName};

/// Attribute values by name, sorted so that everything built from them is
/// deterministic.
pub type Attributes = BTreeMap<String, Value>;

/// A reference from one attribute to another resource: the attribute holds the
/// target address (or a list of them) in the spec, and the target's `field`
/// (its provider id, say) once the target exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// The resources referred to, in the order the spec lists them.
    pub targets: Vec<Address>,
    /// Which attribute of each target to substitute (`id`, `key_name`, …).
    pub field: String,
    /// Whether the attribute is a list (otherwise it holds exactly one target).
    pub list: bool,
}

/// The desired state of one resource: provider, kind and attributes, with
/// references to other resources left symbolic until they can be resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceConfig {
    /// Where the resource lives in the deployment.
    pub address: Address,
    /// Which provider manages it (`ec2`, …).
    pub provider: String,
    /// The provider's kind name (`instance`, `key_pair`, `security_group`).
    pub kind: String,
    /// Desired attributes. Referring attributes hold target addresses here.
    pub attributes: Attributes,
    /// Attributes that refer to other resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub references: BTreeMap<String, Reference>,
    /// Everything this resource must wait for: reference targets and explicit
    /// `depends_on`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub depends_on: BTreeSet<Address>,
    /// The attributes whose values prov made from the address (not saved in
    /// plans: a plan holds the values already chosen).
    #[serde(skip)]
    pub names: Vec<DerivedName>,
}

impl ResourceConfig {
    /// This configuration with the names it would have at `names_from`
    /// (where its object was created, before a move).
    #[must_use]
    pub fn with_names_of(&self, deployment: &str, names_from: &Address) -> Self {
        let mut kept = self.clone();
        for name in &self.names {
            name.set(&mut kept.attributes, deployment, names_from);
        }
        kept
    }
}

/// Desired attributes after references were resolved as far as possible.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    /// Attributes whose values are known now.
    pub attributes: Attributes,
    /// Attributes whose values will be known only after apply (they refer to a
    /// resource that does not exist yet or is being replaced).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unknown: BTreeSet<String>,
}

impl ResourceConfig {
    /// Resolves references with `lookup(target, field)`, which returns the
    /// target's value of `field` when the target exists and will keep it.
    pub fn resolve(&self, mut lookup: impl FnMut(&Address, &str) -> Option<Value>) -> Desired {
        let mut desired = Desired {
            attributes: self.attributes.clone(),
            unknown: BTreeSet::new(),
        };
        for (attribute, reference) in &self.references {
            let values: Option<Vec<Value>> = reference
                .targets
                .iter()
                .map(|target| lookup(target, &reference.field))
                .collect();
            match values {
                Some(values) => {
                    let value = if reference.list {
                        Value::Array(values)
                    } else {
                        values.into_iter().next().unwrap_or(Value::Null)
                    };
                    desired.attributes.insert(attribute.clone(), value);
                }
                None => {
                    desired.attributes.remove(attribute);
                    desired.unknown.insert(attribute.clone());
                }
            }
        }
        desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_known_and_marks_unknown() {
        let sg: Address = "security_group.web".parse().unwrap();
        let kp: Address = "key_pair.k".parse().unwrap();
        let config = ResourceConfig {
            address: Address::host("web", Some(0)),
            provider: "ec2".into(),
            kind: "instance".into(),
            attributes: [
                ("security_groups".to_owned(), json!(["security_group.web"])),
                ("key_name".to_owned(), json!("key_pair.k")),
            ]
            .into(),
            references: [
                (
                    "security_groups".to_owned(),
                    Reference {
                        targets: vec![sg.clone()],
                        field: "id".into(),
                        list: true,
                    },
                ),
                (
                    "key_name".to_owned(),
                    Reference {
                        targets: vec![kp.clone()],
                        field: "key_name".into(),
                        list: false,
                    },
                ),
            ]
            .into(),
            depends_on: [sg.clone(), kp].into(),
            names: Vec::new(),
        };
        let desired = config.resolve(|target, _| (target == &sg).then(|| json!("sg-1")));
        assert_eq!(desired.attributes["security_groups"], json!(["sg-1"]));
        assert!(desired.unknown.contains("key_name"));
        assert!(!desired.attributes.contains_key("key_name"));
    }
}
