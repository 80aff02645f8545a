//! `prov validate`.

use anyhow::Result;

use crate::cli::Cli;
use crate::command::EXIT_OK;

/// Checks the spec and says what it holds.
pub fn run(cli: &Cli) -> Result<u8> {
    let spec = crate::spec::load(&cli.file)?;
    let hosts = spec
        .resources
        .iter()
        .filter(|r| r.address.is_host())
        .count();
    println!(
        "{} is valid: deployment `{}`, {} resources ({} hosts).",
        cli.file.display(),
        spec.deployment,
        spec.resources.len(),
        hosts
    );
    Ok(EXIT_OK)
}
