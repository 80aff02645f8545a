//! `prov ssh HOST [-- CMD]` and `prov exec [--on SEL] -- CMD`: commands on
//! the deployed hosts, reached exactly as deploys reach them (the pinned
//! host key, the deployer's identity, the host's SSH overrides and jump
//! host), never accepting an unknown key. State is read, not locked: a
//! session may stay open as long as the user likes.

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use prov_provider::Address;
use prov_state::StateDocument;
use serde::Serialize;

use crate::cli::Cli;
use crate::cli_everyday::{ExecArgs, SshArgs};
use crate::command::{Context, EXIT_OK};
use crate::deploy::target::{self, Endpoint};
use crate::deploy::DeployContext;
use crate::spec::HostInfo;
use crate::ssh::{Connection, ExecOutput, Request, Stream, Terminal};
use crate::tasks::{Joined, Tasks};
use crate::ui::terminal;

/// Exit code of `prov ssh` when the remote command was killed by a signal
/// (as OpenSSH's client).
const EXIT_SIGNALLED: u8 = 255;

/// Logs in to one host (a PTY when stdin and stdout are terminals), or runs
/// one command there; exits with the remote command's status.
pub async fn ssh(cli: &Cli, args: &SshArgs) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    refuse_new_keys(cli)?;
    let (address, info) = super::hosts::named(&ctx.spec, &args.host)?;
    let deploy = DeployContext::new(&ctx.spec, false, false)?;
    let doc = recorded(&ctx).await?;
    let endpoint = reach(&deploy, &doc, address, info)?;
    let connection = target::fresh(&endpoint, target::options()).await?;
    let command = (!args.command.is_empty()).then(|| args.command.join(" "));
    let interactive = terminal::interactive();
    let terminal_request = if interactive {
        Some(Terminal {
            term: std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".to_owned()),
            size: terminal::size(),
            resized: terminal::resizes()?,
        })
    } else {
        None
    };
    let request = Request {
        command: command.as_deref(),
        terminal: terminal_request,
    };
    let raw = if interactive {
        Some(terminal::RawMode::enable()?)
    } else {
        None
    };
    let mut write = |stream: Stream, bytes: &[u8]| {
        use std::io::Write as _;
        let _ = match stream {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Stream::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(bytes).and_then(|()| err.flush())
            }
        };
    };
    let ended = connection
        .exec_streaming(request, tokio::io::stdin(), &mut write)
        .await;
    drop(raw);
    connection.close().await;
    let ended = ended?;
    Ok(match ended.status {
        Some(status) => u8::try_from(status).unwrap_or(u8::MAX),
        None => EXIT_SIGNALLED,
    })
}

/// What `prov exec --json` prints for one host.
#[derive(Debug, Serialize)]
struct HostOutcome {
    /// The host's address.
    host: Address,
    /// The command's exit status (absent when it did not exit normally).
    exit_code: Option<u32>,
    /// The signal that killed it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<String>,
    /// Its standard output (lossy UTF-8).
    stdout: String,
    /// Its standard error (lossy UTF-8).
    stderr: String,
    /// Why the command could not be run (the host could not be reached).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl HostOutcome {
    fn failed(&self) -> bool {
        self.exit_code != Some(0)
    }

    /// `web[1] (exit 3)`, for the closing error.
    fn describe(&self) -> String {
        match (&self.error, self.exit_code, &self.signal) {
            (Some(error), _, _) => format!("{} ({error})", self.host),
            (None, Some(code), _) => format!("{} (exit {code})", self.host),
            (None, None, Some(signal)) => format!("{} (killed by SIG{signal})", self.host),
            (None, None, None) => format!("{} (no exit status)", self.host),
        }
    }
}

/// Runs the command on every selected host, `--parallelism` at once, its
/// output prefixed with the host's address as it comes (or one JSON array
/// at the end); fails naming the hosts where it failed.
pub async fn exec(cli: &Cli, args: &ExecArgs) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    refuse_new_keys(cli)?;
    let hosts = super::hosts::selected(&ctx.spec, &args.select.on)?;
    if hosts.is_empty() {
        bail!("the spec has no host to run on");
    }
    let deploy = DeployContext::new(&ctx.spec, false, false)?;
    let doc = recorded(&ctx).await?;
    let command: Arc<str> = args.command.join(" ").into();
    let width = hosts
        .iter()
        .map(|(a, _)| a.to_string().len())
        .max()
        .unwrap_or(0);
    let mut queue: std::collections::VecDeque<(Address, Result<Endpoint>)> = hosts
        .iter()
        .map(|(address, info)| ((*address).clone(), reach(&deploy, &doc, address, info)))
        .collect();
    let mut outcomes = Vec::new();
    let mut running = Tasks::default();
    let mut stopping = false;
    loop {
        while !stopping && running.len() < usize::from(args.parallelism) {
            let Some((address, endpoint)) = queue.pop_front() else {
                break;
            };
            let command = Arc::clone(&command);
            let live = !args.json;
            running.spawn(address.clone(), async move {
                run_on(address, endpoint, &command, live, width).await
            });
        }
        let Some(joined) = running.next().await else {
            break;
        };
        match joined {
            Joined::Done(_, outcome) => outcomes.push(outcome),
            Joined::Stopping => stopping = true,
            Joined::Abandoned(host) => outcomes.push(not_run(host, "abandoned after Ctrl-C")),
            Joined::Panicked(host, panic) => {
                outcomes.push(not_run(host, &format!("internal error: {panic}")));
            }
        }
    }
    outcomes.extend(
        queue
            .into_iter()
            .map(|(host, _)| not_run(host, "not started after Ctrl-C")),
    );
    outcomes.sort_by(|a, b| a.host.cmp(&b.host));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.failed())
        .map(HostOutcome::describe)
        .collect();
    if !failed.is_empty() {
        bail!(
            "the command failed on {} of {} host(s): {}",
            failed.len(),
            outcomes.len(),
            failed.join(", ")
        );
    }
    Ok(EXIT_OK)
}

/// Runs `command` on one host; with `live`, prints its output as it comes,
/// each line prefixed with the host's address padded to `width`.
async fn run_on(
    host: Address,
    endpoint: Result<Endpoint>,
    command: &str,
    live: bool,
    width: usize,
) -> HostOutcome {
    let padded = format!("{:width$}", host.to_string());
    let connected = match endpoint {
        Ok(endpoint) => target::fresh(&endpoint, target::options()).await,
        Err(error) => Err(error),
    };
    let connection = match connected {
        Ok(connection) => connection,
        Err(error) => {
            let error = format!("{error:#}");
            if live {
                eprintln!("{padded} | {error}");
            }
            return not_run(host, &error);
        }
    };
    let prefix = format!("{padded} | ");
    let mut lines = Lines::new(prefix, live);
    let ended = run_streaming(&connection, command, &mut lines).await;
    lines.finish();
    connection.close().await;
    match ended {
        Ok(ended) => HostOutcome {
            host,
            exit_code: ended.status,
            signal: ended.signal,
            stdout: String::from_utf8_lossy(&lines.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&lines.stderr).into_owned(),
            error: None,
        },
        Err(error) => HostOutcome {
            stdout: String::from_utf8_lossy(&lines.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&lines.stderr).into_owned(),
            ..not_run(host, &format!("{error:#}"))
        },
    }
}

async fn run_streaming(
    connection: &Connection,
    command: &str,
    lines: &mut Lines,
) -> Result<ExecOutput> {
    let request = Request {
        command: Some(command),
        terminal: None,
    };
    let mut output = |stream: Stream, bytes: &[u8]| lines.push(stream, bytes);
    Ok(connection
        .exec_streaming(request, tokio::io::empty(), &mut output)
        .await?)
}

/// A host the command never ran on, and why.
fn not_run(host: Address, why: &str) -> HostOutcome {
    HostOutcome {
        host,
        exit_code: None,
        signal: None,
        stdout: String::new(),
        stderr: String::new(),
        error: Some(why.to_owned()),
    }
}

/// One host's output: kept whole (for `--json`), and printed line by line
/// with the host's prefix as it comes (stdout to stdout, stderr to stderr).
struct Lines {
    prefix: String,
    live: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Where the unprinted part of each stream starts.
    printed: [usize; 2],
}

impl Lines {
    fn new(prefix: String, live: bool) -> Self {
        Self {
            prefix,
            live,
            stdout: Vec::new(),
            stderr: Vec::new(),
            printed: [0, 0],
        }
    }

    fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let which = usize::from(stream == Stream::Stderr);
        let kept = if which == 0 {
            &mut self.stdout
        } else {
            &mut self.stderr
        };
        kept.extend_from_slice(bytes);
        if !self.live {
            return;
        }
        let start = self.printed[which];
        let Some(unprinted) = kept.get(start..) else {
            return;
        };
        let Some(last_newline) = unprinted.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let complete = &unprinted[..=last_newline];
        print_lines(&self.prefix, stream, complete);
        self.printed[which] = start + last_newline + 1;
    }

    /// Prints what is left of each stream (a last line without newline).
    fn finish(&mut self) {
        if !self.live {
            return;
        }
        for (which, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let kept = if which == 0 {
                &self.stdout
            } else {
                &self.stderr
            };
            if let Some(rest) = kept.get(self.printed[which]..).filter(|r| !r.is_empty()) {
                print_lines(&self.prefix, stream, rest);
            }
            self.printed[which] = kept.len();
        }
    }
}

/// Prints `text` line by line, each with `prefix`, in one write.
fn print_lines(prefix: &str, stream: Stream, text: &[u8]) {
    use std::io::Write as _;
    let text = String::from_utf8_lossy(text);
    let mut block = String::new();
    for line in text.lines() {
        block.push_str(prefix);
        block.push_str(line);
        block.push('\n');
    }
    let _ = match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(block.as_bytes()),
        Stream::Stderr => std::io::stderr().lock().write_all(block.as_bytes()),
    };
}

/// `--accept-new-host-keys` records keys, which these commands (holding no
/// lock) never do.
fn refuse_new_keys(cli: &Cli) -> Result<()> {
    if cli.accept_new_host_keys {
        bail!("prov ssh and prov exec use the host keys pinned in the spec or state and record none; run `prov apply --accept-new-host-keys` to pin a new host's key first");
    }
    Ok(())
}

/// The latest state (read without the lock), or a new one.
async fn recorded(ctx: &Context) -> Result<StateDocument> {
    Ok(ctx
        .read_state()
        .await?
        .unwrap_or_else(|| StateDocument::new(&ctx.spec.deployment)))
}

/// How to reach `address`, exactly as a deploy would.
fn reach(
    deploy: &DeployContext,
    doc: &StateDocument,
    address: &Address,
    info: &HostInfo,
) -> Result<Endpoint> {
    target::endpoint(&deploy.spec, info, address, doc, deploy.identity(), false)
        .map_err(|error| anyhow!("{error:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_whole_and_split_only_at_newlines() {
        let mut lines = Lines::new("h | ".into(), false);
        lines.push(Stream::Stdout, b"one\ntw");
        lines.push(Stream::Stdout, b"o\n");
        lines.push(Stream::Stderr, b"oops");
        lines.finish();
        assert_eq!(lines.stdout, b"one\ntwo\n");
        assert_eq!(lines.stderr, b"oops");
        let outcome = HostOutcome {
            host: "web[1]"
                .parse()
                .unwrap_or_else(|_| Address::host("web", Some(1))),
            exit_code: Some(3),
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            error: None,
        };
        assert!(outcome.failed());
        assert_eq!(outcome.describe(), "web[1] (exit 3)");
    }
}
