//! Whether the secrets state records on each host are still there: part of
//! phase 4 (a reboot empties `/run/keys`, and a recorded keyed hash alone
//! would say all is well). Asks each reachable host once, for every
//! recorded destination at once; changes nothing.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use prov_provider::Address;
use prov_state::StateDocument;

use super::resources::{BuildOptions, ResourceDiff};
use crate::deploy::DeployContext;
use crate::ssh::shell_quote;

/// What is known of the recorded secrets' files on the hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Presence {
    /// The hosts were not asked: the records are trusted.
    #[default]
    Trusted,
    /// The hosts were asked; these (host, secret) files are missing.
    Asked(BTreeSet<(Address, String)>),
    /// Upload every secret again (`prov upload-secrets`).
    Reupload,
}

/// The reason of an upload whose hash [`Presence::Asked`] found missing.
pub const MISSING: &str = "missing on the host";

/// The reason of an upload `prov upload-secrets` asked for.
pub const REUPLOAD: &str = "upload requested";

impl Presence {
    /// Why secret `name`, recorded on `address` with the hash it should
    /// have, must be uploaded all the same (`None`: it need not be).
    #[must_use]
    pub fn reason(&self, address: &Address, name: &str) -> Option<&'static str> {
        match self {
            Self::Trusted => None,
            Self::Asked(missing) => missing
                .contains(&(address.clone(), name.to_owned()))
                .then_some(MISSING),
            Self::Reupload => Some(REUPLOAD),
        }
    }
}

/// Asks every selected host that state records secrets on (and that keeps
/// its machine) which of their files exist, one command per host, all
/// hosts at once. A host that cannot be reached or asked is left out (its
/// records are trusted) and logged.
pub async fn ask(
    ctx: &DeployContext,
    doc: &StateDocument,
    resources: &ResourceDiff,
    options: &BuildOptions,
) -> Presence {
    let mut tasks = tokio::task::JoinSet::new();
    for (address, record) in &doc.hosts {
        let Some(info) = ctx.spec.hosts.get(address) else {
            continue;
        };
        if record.secrets.is_empty()
            || resources.is_new(address)
            || !options.selection.matches(address, &info.tags)
        {
            continue;
        }
        let reach = ctx.endpoint(info, address, doc);
        let files: Vec<(String, String)> = record
            .secrets
            .iter()
            .map(|(name, secret)| (name.clone(), secret.destination.clone()))
            .collect();
        let pool = ctx.pool.clone();
        let address = address.clone();
        tasks.spawn(async move {
            let missing = async {
                let connection = pool.get(&reach?).await?;
                missing_files(&connection, &files).await
            }
            .await;
            (address, missing)
        });
    }
    let mut missing = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((address, Ok(names))) => {
                missing.extend(names.into_iter().map(|name| (address.clone(), name)));
            }
            Ok((address, Err(error))) => tracing::info!(
                %address,
                error = %format!("{error:#}"),
                "could not ask the host whether its secrets are there; trusting state"
            ),
            Err(error) => tracing::warn!(%error, "a secrets check panicked"),
        }
    }
    Presence::Asked(missing)
}

/// The names among `files` (name, destination) whose destination does not
/// exist on the host.
async fn missing_files(
    connection: &crate::ssh::Connection,
    files: &[(String, String)],
) -> Result<Vec<String>> {
    let script: Vec<String> = files
        .iter()
        .map(|(_, destination)| {
            format!(
                "if [ -e {0} ]; then echo y; else echo n; fi",
                shell_quote(destination)
            )
        })
        .collect();
    let command = connection.privileged(&script.join("; "));
    let output = connection
        .exec_checked(&command)
        .await
        .context("asking which secrets are there")?;
    let answers = String::from_utf8_lossy(&output);
    let answers: Vec<&str> = answers.lines().map(str::trim).collect();
    anyhow::ensure!(
        answers.len() == files.len(),
        "the host answered {} lines for {} files",
        answers.len(),
        files.len()
    );
    Ok(files
        .iter()
        .zip(answers)
        .filter(|(_, answer)| *answer == "n")
        .map(|((name, _), _)| name.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_missing_files_and_requested_uploads_have_a_reason() {
        let web: Address = "web[0]".parse().unwrap();
        let asked = Presence::Asked([(web.clone(), "token".to_owned())].into());
        assert_eq!(asked.reason(&web, "token"), Some(MISSING));
        assert_eq!(asked.reason(&web, "other"), None);
        assert_eq!(Presence::Trusted.reason(&web, "token"), None);
        assert_eq!(Presence::Reupload.reason(&web, "other"), Some(REUPLOAD));
    }
}
