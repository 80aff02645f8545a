//! `prov output`: the output values in state, for people (`text`), programs
//! (`json`), shells (`env`) and GitHub Actions (`github`).

use std::collections::BTreeMap;
use std::io::Write as _;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::cli::{Cli, OutputArgs, OutputFormat};
use crate::command::{Context, EXIT_OK};

/// The prefix of the variables `--format env` writes (and `prov env run`
/// sets).
pub const ENV_PREFIX: &str = "PROV_OUTPUT_";

/// Prints output values from state.
pub async fn run(cli: &Cli, args: &OutputArgs) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    let mut outputs: BTreeMap<String, Value> = ctx
        .read_state()
        .await?
        .map(|d| (*d.outputs).clone())
        .unwrap_or_default();
    let format = match (args.format, args.json) {
        (Some(format), _) => format,
        (None, true) => OutputFormat::Json,
        (None, false) => OutputFormat::Text,
    };
    if let Some(name) = &args.name {
        let value = outputs.remove(name).with_context(|| {
            format!("no output `{name}` in state (apply first, or check [outputs] in the spec)")
        })?;
        match format {
            OutputFormat::Text => println!("{}", plain(&value)),
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&value)?),
            OutputFormat::Env | OutputFormat::Github => {
                write(format, &BTreeMap::from([(name.clone(), value)]))?;
            }
        }
        return Ok(EXIT_OK);
    }
    write(format, &outputs)?;
    Ok(EXIT_OK)
}

/// Writes every output in `format`: to stdout, or for `github` to the file
/// `$GITHUB_OUTPUT` names.
fn write(format: OutputFormat, outputs: &BTreeMap<String, Value>) -> Result<()> {
    match format {
        OutputFormat::Text => {
            for (name, value) in outputs {
                println!("{name} = {value}");
            }
        }
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(outputs)?),
        OutputFormat::Env => print!("{}", env_lines(outputs)),
        OutputFormat::Github => {
            let Some(path) = std::env::var_os("GITHUB_OUTPUT") else {
                bail!("--format github appends to the file $GITHUB_OUTPUT names, and it is not set (outside GitHub Actions, use --format env or json)");
            };
            let delimiter = format!("PROV_EOF_{}", uuid::Uuid::new_v4().simple());
            let text = github_entries(outputs, &delimiter);
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .with_context(|| format!("opening $GITHUB_OUTPUT ({})", path.to_string_lossy()))?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| {
                    format!("appending to $GITHUB_OUTPUT ({})", path.to_string_lossy())
                })?;
        }
    }
    Ok(())
}

/// Strings without quotes, anything else as JSON (for shell use).
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `PROV_OUTPUT_WEB_IPS`: the name upper-cased, anything but letters and
/// digits as `_`.
#[must_use]
pub fn env_name(name: &str) -> String {
    let mut variable = String::from(ENV_PREFIX);
    variable.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    variable
}

/// Every output as an environment variable: name and plain value.
#[must_use]
pub fn env_vars(outputs: &BTreeMap<String, Value>) -> Vec<(String, String)> {
    outputs
        .iter()
        .map(|(name, value)| (env_name(name), plain(value)))
        .collect()
}

/// `PROV_OUTPUT_NAME='value'` lines, quoted for a POSIX shell.
fn env_lines(outputs: &BTreeMap<String, Value>) -> String {
    env_vars(outputs)
        .into_iter()
        .map(|(name, value)| format!("{name}={}\n", prov_provider::shell::quote_always(&value)))
        .collect()
}

/// GitHub's output file entries: `name=value`, or for a value with line
/// breaks `name<<DELIMITER` … `DELIMITER`.
fn github_entries(outputs: &BTreeMap<String, Value>, delimiter: &str) -> String {
    outputs
        .iter()
        .map(|(name, value)| {
            let value = plain(value);
            if value.contains('\n') || value.contains('\r') {
                format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
            } else {
                format!("{name}={value}\n")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outputs() -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("web_ips".to_owned(), json!(["10.0.0.1", "10.0.0.2"])),
            ("db-host".to_owned(), json!("db's.example")),
            ("note".to_owned(), json!("two\nlines")),
        ])
    }

    #[test]
    fn env_lines_are_shell_quoted_variables() {
        assert_eq!(
            env_lines(&outputs()),
            "PROV_OUTPUT_DB_HOST='db'\\''s.example'\n\
             PROV_OUTPUT_NOTE='two\nlines'\n\
             PROV_OUTPUT_WEB_IPS='[\"10.0.0.1\",\"10.0.0.2\"]'\n"
        );
    }

    #[test]
    fn github_entries_use_a_delimiter_for_line_breaks() {
        assert_eq!(
            github_entries(&outputs(), "EOF_1"),
            "db-host=db's.example\n\
             note<<EOF_1\ntwo\nlines\nEOF_1\n\
             web_ips=[\"10.0.0.1\",\"10.0.0.2\"]\n"
        );
    }
}
