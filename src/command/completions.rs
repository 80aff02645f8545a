//! `prov completions SHELL` and `prov man`: shell completion scripts and
//! manual pages, generated from the command-line definition itself.

use std::io::Write as _;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::command::EXIT_OK;

/// Prints the completion script of `args.shell` on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<u8> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "prov", &mut out);
    out.flush().context("writing the completion script")?;
    Ok(EXIT_OK)
}

/// Prints prov(1) on stdout, or writes one page per command into
/// `args.dir` (prov.1, prov-plan.1, prov-state-mv.1, …).
pub fn man(args: &ManArgs) -> Result<u8> {
    let command = Cli::command();
    match &args.dir {
        Some(dir) => {
            fs_err::create_dir_all(dir)?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("writing manual pages to {}", dir.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .context("writing the manual page")?;
            out.flush().context("writing the manual page")?;
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "prov", &mut script);
            let script = String::from_utf8(script).unwrap();
            for command in ["plan", "apply", "exec", "upload-secrets", "completions"] {
                assert!(script.contains(command), "{shell}: {command}");
            }
        }
    }

    #[test]
    fn one_page_per_command_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        man(&ManArgs {
            dir: Some(dir.path().to_owned()),
        })
        .unwrap();
        for page in ["prov.1", "prov-plan.1", "prov-state-mv.1", "prov-exec.1"] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
            assert!(text.contains(".TH"), "{page}: {text:.80}");
        }
    }
}
