//! Output values: `[outputs] web_ips = "web[*].public_ip"`, computed from state
//! after apply.

use std::collections::BTreeMap;

use prov_provider::Address;
use prov_state::StateDocument;
use serde_json::Value;

use crate::spec::OutputSpec;

/// Computes every output from `doc`. A missing resource or attribute gives
/// `null`; `NAME[*]` gives a list over the indexes in order.
#[must_use]
pub fn compute(
    outputs: &BTreeMap<String, OutputSpec>,
    doc: &StateDocument,
) -> BTreeMap<String, Value> {
    outputs
        .iter()
        .map(|(name, spec)| (name.clone(), compute_one(spec, doc)))
        .collect()
}

fn compute_one(spec: &OutputSpec, doc: &StateDocument) -> Value {
    let field = |key: &Address| -> Value {
        doc.resources
            .get(key)
            .and_then(|r| {
                if spec.attribute == "id" {
                    r.id.clone().map(Value::from)
                } else {
                    r.attributes.get(&spec.attribute).cloned()
                }
            })
            .unwrap_or(Value::Null)
    };
    if let Some(prefix) = spec.address.strip_suffix("[*]") {
        let Ok(base) = prefix.parse::<Address>() else {
            return Value::Null;
        };
        let mut items: Vec<(u32, Value)> = doc
            .resources
            .keys()
            .filter(|a| a.kind == base.kind && a.name == base.name)
            .filter_map(|a| a.index.map(|i| (i, field(a))))
            .collect();
        items.sort_by_key(|(i, _)| *i);
        Value::Array(items.into_iter().map(|(_, v)| v).collect())
    } else {
        spec.address
            .parse::<Address>()
            .map_or(Value::Null, |address| field(&address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prov_state::NewResource;
    use serde_json::json;

    fn record(doc: &mut StateDocument, address: &str, id: &str, ip: &str) {
        let new = NewResource {
            provider: "ec2",
            kind: "instance",
            dependencies: &[],
        };
        let attributes = [("public_ip".to_owned(), json!(ip))].into();
        doc.record_imported(&address.parse().unwrap(), new, id, attributes);
    }

    #[test]
    fn lists_and_single_values() {
        let mut doc = StateDocument::new("demo");
        record(&mut doc, "web[1]", "i-1", "1.1.1.1");
        record(&mut doc, "web[0]", "i-0", "0.0.0.0");
        record(&mut doc, "db", "i-db", "9.9.9.9");
        let outputs: BTreeMap<String, OutputSpec> = [
            (
                "ips".to_owned(),
                OutputSpec {
                    address: "web[*]".into(),
                    attribute: "public_ip".into(),
                },
            ),
            (
                "db".to_owned(),
                OutputSpec {
                    address: "db".into(),
                    attribute: "id".into(),
                },
            ),
            (
                "none".to_owned(),
                OutputSpec {
                    address: "nope".into(),
                    attribute: "id".into(),
                },
            ),
        ]
        .into();
        let values = compute(&outputs, &doc);
        assert_eq!(values["ips"], json!(["0.0.0.0", "1.1.1.1"]));
        assert_eq!(values["db"], json!("i-db"));
        assert_eq!(values["none"], Value::Null);
    }
}
