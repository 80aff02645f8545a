//! `prov output`.

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::cli::{Cli, OutputArgs};
use crate::command::{Context, EXIT_OK};

/// Prints output values from state.
pub async fn run(cli: &Cli, args: &OutputArgs) -> Result<u8> {
    let ctx = Context::load(cli)?;
    let outputs = ctx
        .read_state()
        .await?
        .map(|d| d.outputs)
        .unwrap_or_default();
    if let Some(name) = &args.name {
        let value = outputs.get(name).with_context(|| {
            format!("no output `{name}` in state (apply first, or check [outputs] in the spec)")
        })?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", plain(value));
        }
        return Ok(EXIT_OK);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outputs)?);
    } else {
        for (name, value) in &outputs {
            println!("{name} = {value}");
        }
    }
    Ok(EXIT_OK)
}

/// Strings without quotes, anything else as JSON (for shell use).
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
