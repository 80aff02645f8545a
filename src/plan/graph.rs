//! The dependency graph between resources: topological order and Graphviz DOT.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use prov_provider::{Address, ResourceConfig};

/// Orders `configs` (owned or borrowed) so every resource comes after what
/// it depends on; ties in address order (deterministic). Dependencies
/// outside `configs` are ignored.
///
/// # Errors
/// The addresses left on a cycle (the spec front end rejects cycles first, so
/// this is a safety net).
pub fn topological<C: Borrow<ResourceConfig>>(
    configs: &[C],
) -> Result<Vec<&ResourceConfig>, Vec<Address>> {
    let by_address: BTreeMap<&Address, &ResourceConfig> = configs
        .iter()
        .map(|c| {
            let c = c.borrow();
            (&c.address, c)
        })
        .collect();
    // Kahn's algorithm in waves: each wave is every resource whose
    // dependencies are all in earlier waves, in address order. Linear in
    // resources and edges (the wave loop used to scan every remaining
    // resource per resource placed: 8 of 12 s of a 100,000-resource plan).
    let mut waiting: BTreeMap<&Address, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&Address, Vec<&Address>> = BTreeMap::new();
    for config in configs.iter().map(Borrow::borrow) {
        let known = config
            .depends_on
            .iter()
            .filter(|d| by_address.contains_key(d));
        let mut count = 0;
        for dependency in known {
            dependents
                .entry(dependency)
                .or_default()
                .push(&config.address);
            count += 1;
        }
        waiting.insert(&config.address, count);
    }
    let mut wave: Vec<&Address> = waiting
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(address, _)| *address)
        .collect();
    let mut order = Vec::with_capacity(configs.len());
    while !wave.is_empty() {
        let mut next = BTreeSet::new();
        for address in wave {
            waiting.remove(address);
            if let Some(config) = by_address.get(address) {
                order.push(*config);
            }
            for dependent in dependents.get(address).into_iter().flatten() {
                if let Some(count) = waiting.get_mut(dependent) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        next.insert(*dependent);
                    }
                }
            }
        }
        wave = next.into_iter().collect();
    }
    if waiting.is_empty() {
        Ok(order)
    } else {
        Err(waiting.keys().map(|a| (*a).clone()).collect())
    }
}

/// The graph in Graphviz DOT: one node per resource, an edge from each
/// resource to what it depends on.
#[must_use]
pub fn dot(deployment: &str, configs: &[ResourceConfig]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(deployment));
    let _ = writeln!(out, "  rankdir = \"RL\";");
    let _ = writeln!(out, "  node [shape = \"box\"];");
    for config in configs {
        let _ = writeln!(
            out,
            "  \"{}\" [label = \"{}\\n({} {})\"];",
            escape(&config.address.to_string()),
            escape(&config.address.to_string()),
            escape(&config.provider),
            escape(&config.kind)
        );
    }
    for config in configs {
        for dependency in &config.depends_on {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\";",
                escape(&config.address.to_string()),
                escape(&dependency.to_string())
            );
        }
    }
    out.push_str("}\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(address: &str, deps: &[&str]) -> ResourceConfig {
        ResourceConfig {
            address: address.parse().unwrap(),
            provider: "fake".into(),
            kind: "thing".into(),
            attributes: Default::default(),
            references: Default::default(),
            depends_on: deps.iter().map(|d| d.parse().unwrap()).collect(),
            names: Vec::new(),
        }
    }

    #[test]
    fn orders_dependencies_first() {
        let configs = vec![
            config("a", &["key_pair.k", "b"]),
            config("b", &["key_pair.k"]),
            config("key_pair.k", &[]),
        ];
        let order: Vec<String> = topological(&configs)
            .unwrap()
            .iter()
            .map(|c| c.address.to_string())
            .collect();
        assert_eq!(order, ["key_pair.k", "b", "a"]);
    }

    #[test]
    fn reports_cycles() {
        let configs = vec![config("a", &["b"]), config("b", &["a"]), config("c", &[])];
        let cycle = topological(&configs).unwrap_err();
        assert_eq!(cycle.len(), 2);
    }

    #[test]
    fn dot_has_nodes_and_edges() {
        let configs = vec![config("a", &["key_pair.k"]), config("key_pair.k", &[])];
        let dot = dot("demo", &configs);
        assert!(dot.contains("\"a\" -> \"key_pair.k\";"));
        assert!(dot.starts_with("digraph \"demo\""));
    }
}
