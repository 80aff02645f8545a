//! `prov show PLANFILE`: a saved plan, rendered as `prov plan` would, read
//! without touching state.

use anyhow::Result;

use crate::cli::Cli;
use crate::cli_everyday::ShowArgs;
use crate::command::EXIT_OK;
use crate::ui::Painter;

/// Prints the saved plan (text, or JSON with `--json`). An encrypted plan
/// is opened as `prov apply FILE` opens it: with `PROV_AGE_IDENTITY`, else
/// the deployer's key of the spec (when the spec can be read: a plan can be
/// shown without it).
pub fn run(cli: &Cli, args: &ShowArgs) -> Result<u8> {
    let spec = crate::spec::load(&cli.file).ok();
    let deployer = spec.as_ref().and_then(super::context::state_identity);
    let saved = super::apply::load_plan(deployer.as_deref(), &args.plan_file)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&saved.plan)?);
        return Ok(EXIT_OK);
    }
    print!(
        "{}",
        crate::plan::render_text(&saved.plan, Painter::for_stdout(cli.color))
    );
    if spec.is_some_and(|s| s.source_hash != saved.plan.spec_hash) {
        println!(
            "\nNote: {} changed since this plan was made; `prov apply {}` would refuse it.",
            cli.file.display(),
            args.plan_file.display()
        );
    }
    Ok(EXIT_OK)
}
