//! Cycle detection over host `depends_on` edges.

use std::collections::BTreeMap;
use std::ops::Range;

/// One host and its `depends_on` entries (name, span), in source order.
pub(crate) type Node<'a> = (&'a str, Vec<(&'a str, Range<usize>)>);

/// A dependency cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cycle {
    /// The hosts along the cycle, the first repeated at the end.
    pub path: Vec<String>,
    /// Span of the `depends_on` entry that closes the cycle.
    pub closing: Range<usize>,
}

impl Cycle {
    /// `web -> db -> web`.
    pub fn describe(&self) -> String {
        self.path.join(" -> ")
    }
}

/// Finds the cycles a depth-first search meets, visiting `nodes` and their
/// edges in the given order; edges to unknown names are ignored.
pub(crate) fn find_cycles(nodes: &[Node<'_>]) -> Vec<Cycle> {
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, i))
        .collect();
    let mut search = Search {
        nodes,
        index,
        state: vec![State::New; nodes.len()],
        stack: Vec::new(),
        cycles: Vec::new(),
    };
    for start in 0..nodes.len() {
        if search.state[start] == State::New {
            search.visit(start);
        }
    }
    search.cycles
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    OnStack,
    Done,
}

struct Search<'n, 'a> {
    nodes: &'n [Node<'a>],
    index: BTreeMap<&'a str, usize>,
    state: Vec<State>,
    stack: Vec<usize>,
    cycles: Vec<Cycle>,
}

impl Search<'_, '_> {
    fn visit(&mut self, node: usize) {
        self.state[node] = State::OnStack;
        self.stack.push(node);
        let nodes = self.nodes;
        for (target, span) in &nodes[node].1 {
            let Some(&next) = self.index.get(target) else {
                continue;
            };
            match self.state[next] {
                State::New => self.visit(next),
                State::OnStack => {
                    let from = self.stack.iter().rposition(|&n| n == next).unwrap_or(0);
                    let path = self.stack[from..]
                        .iter()
                        .chain(std::iter::once(&next))
                        .map(|&n| nodes[n].0.to_owned())
                        .collect();
                    self.cycles.push(Cycle {
                        path,
                        closing: span.clone(),
                    });
                }
                State::Done => {}
            }
        }
        self.stack.pop();
        self.state[node] = State::Done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_two_and_three_cycles_and_self_loops() {
        let nodes: Vec<Node<'_>> = vec![
            ("web", vec![("db", 0..1)]),
            ("db", vec![("cache", 2..3), ("nope", 9..9)]),
            ("cache", vec![("web", 4..5)]),
            ("solo", vec![("solo", 6..7)]),
            ("leaf", vec![]),
        ];
        let cycles = find_cycles(&nodes);
        let described: Vec<_> = cycles
            .iter()
            .map(|c| (c.describe(), c.closing.clone()))
            .collect();
        assert_eq!(
            described,
            [
                ("web -> db -> cache -> web".to_owned(), 4..5),
                ("solo -> solo".to_owned(), 6..7)
            ]
        );
    }

    #[test]
    fn acyclic_diamond_has_no_cycle() {
        let nodes: Vec<Node<'_>> = vec![
            ("a", vec![("b", 0..0), ("c", 0..0)]),
            ("b", vec![("d", 0..0)]),
            ("c", vec![("d", 0..0)]),
            ("d", vec![]),
        ];
        assert!(find_cycles(&nodes).is_empty());
    }
}
