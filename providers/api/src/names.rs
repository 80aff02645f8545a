//! Names prov gives objects from their address (an EC2 `Name` tag, a
//! libvirt domain, a VirtualBox VM, a local host's hostname), said as data
//! so that a moved object can keep the names it was created with: moving
//! `web[0]` to `app[0]` (`prov state mv`, `[[moved]]`) keeps the machine,
//! and renaming it would replace it (a domain's or a container's name is
//! fixed at creation) or churn its tags on every host for nothing.

use serde_json::Value;

use crate::{Address, Attributes};

/// How a name is made from a deployment and an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameForm {
    /// `web[0]`.
    Address,
    /// `DEPLOYMENT-web[0]`.
    DeploymentAddress,
    /// `DEPLOYMENT-web`: the name without kind or index.
    DeploymentName,
    /// `web-0`: the machine name.
    Machine,
    /// `prov-DEPLOYMENT-web-0`.
    ProvMachine,
}

impl NameForm {
    /// The name for `address` in `deployment`.
    #[must_use]
    pub fn render(self, deployment: &str, address: &Address) -> String {
        match self {
            Self::Address => address.to_string(),
            Self::DeploymentAddress => format!("{deployment}-{address}"),
            Self::DeploymentName => format!("{deployment}-{}", address.name),
            Self::Machine => address.machine_name(),
            Self::ProvMachine => format!("prov-{deployment}-{}", address.machine_name()),
        }
    }
}

/// One attribute (or one key of an object attribute, such as a tag) whose
/// value prov made from the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedName {
    /// The attribute.
    pub attribute: String,
    /// The key within it, when the attribute is an object (`tags`).
    pub key: Option<String>,
    /// How the value was made.
    pub form: NameForm,
}

impl DerivedName {
    /// A whole attribute.
    #[must_use]
    pub fn attribute(attribute: &str, form: NameForm) -> Self {
        Self {
            attribute: attribute.to_owned(),
            key: None,
            form,
        }
    }

    /// One key of an object attribute.
    #[must_use]
    pub fn key(attribute: &str, key: &str, form: NameForm) -> Self {
        Self {
            attribute: attribute.to_owned(),
            key: Some(key.to_owned()),
            form,
        }
    }

    /// Sets the value in `attributes` to the name for `address` (nothing
    /// when the attribute is absent, or not an object where a key is named).
    pub fn set(&self, attributes: &mut Attributes, deployment: &str, address: &Address) {
        let name = Value::String(self.form.render(deployment, address));
        match &self.key {
            None => {
                if let Some(value) = attributes.get_mut(&self.attribute) {
                    *value = name;
                }
            }
            Some(key) => {
                if let Some(Value::Object(map)) = attributes.get_mut(&self.attribute) {
                    if let Some(value) = map.get_mut(key) {
                        *value = name;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms() {
        let web = Address::host("web", Some(0));
        let db = Address::host("db", None);
        let cases = [
            (NameForm::Address, "web[0]", "db"),
            (NameForm::DeploymentAddress, "d-web[0]", "d-db"),
            (NameForm::DeploymentName, "d-web", "d-db"),
            (NameForm::Machine, "web-0", "db"),
            (NameForm::ProvMachine, "prov-d-web-0", "prov-d-db"),
        ];
        for (form, indexed, single) in cases {
            assert_eq!(form.render("d", &web), indexed, "{form:?}");
            assert_eq!(form.render("d", &db), single, "{form:?}");
        }
    }

    #[test]
    fn set_replaces_only_what_is_there() {
        let web = Address::host("web", Some(0));
        let mut attributes: Attributes = serde_json::from_value(json!({
            "name": "prov-d-app-0",
            "tags": {"Name": "d-app[0]", "team": "x"},
        }))
        .unwrap();
        DerivedName::attribute("name", NameForm::ProvMachine).set(&mut attributes, "d", &web);
        DerivedName::key("tags", "Name", NameForm::DeploymentAddress).set(
            &mut attributes,
            "d",
            &web,
        );
        DerivedName::key("tags", "absent", NameForm::Address).set(&mut attributes, "d", &web);
        DerivedName::attribute("hostname", NameForm::Machine).set(&mut attributes, "d", &web);
        assert_eq!(
            Value::Object(attributes.into_iter().collect()),
            json!({"name": "prov-d-web-0", "tags": {"Name": "d-web[0]", "team": "x"}})
        );
    }
}
