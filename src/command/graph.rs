//! `prov graph`.

use anyhow::Result;

use crate::cli::Cli;
use crate::command::EXIT_OK;

/// Prints the dependency graph in Graphviz DOT.
pub fn run(cli: &Cli) -> Result<u8> {
    let spec = crate::spec::load(&cli.file)?;
    print!(
        "{}",
        crate::plan::graph::dot(&spec.deployment, &spec.resources)
    );
    Ok(EXIT_OK)
}
