//! The one runner every VBoxManage call goes through: a timeout per call,
//! errors that quote VBoxManage's stderr and exit status, and parsers for
//! `--machinereadable` output and `list vms`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use prov_provider::ProviderError;

use crate::error::config_error;

/// Where to get VirtualBox, for errors about a missing VBoxManage.
pub(crate) const INSTALL_HINT: &str = "install VirtualBox (https://www.virtualbox.org/wiki/Downloads; it provides VBoxManage), or point [providers.virtualbox] vboxmanage (or PROV_VBOXMANAGE) at the VBoxManage program";

/// What one finished call printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error, trimmed.
    pub stderr: String,
}

impl Outcome {
    fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The error for a failed call of `subcommand`: its stderr and exit status.
    pub(crate) fn error(&self, subcommand: &str) -> ProviderError {
        let status = self.code.map_or_else(
            || "killed by a signal".to_owned(),
            |c| format!("exit status {c}"),
        );
        let stderr = if self.stderr.is_empty() {
            "(no output on stderr)"
        } else {
            &self.stderr
        };
        ProviderError::api(
            format!("VBoxManage {subcommand}"),
            format!("{stderr} ({status})"),
        )
    }

    /// Whether stderr says the machine named is not registered.
    pub(crate) fn is_not_found(&self) -> bool {
        self.stderr.contains("Could not find a registered machine")
            || self.stderr.contains("VBOX_E_OBJECT_NOT_FOUND")
    }
}

/// The VBoxManage program and the calls made through it.
#[derive(Debug, Clone)]
pub struct VBoxManage {
    program: PathBuf,
}

/// How long one call of `subcommand` may take.
fn timeout_for(subcommand: &str) -> Duration {
    match subcommand {
        // Copying disk images can take a while.
        "import" | "clonevm" => Duration::from_secs(900),
        "unregistervm" => Duration::from_secs(300),
        _ => Duration::from_secs(60),
    }
}

impl VBoxManage {
    /// A runner for `program`.
    #[must_use]
    pub fn new(program: PathBuf) -> Self {
        Self { program }
    }

    /// The program run.
    #[must_use]
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs `VBoxManage ARGS` within the subcommand's timeout and returns what
    /// it printed, whatever its exit status.
    ///
    /// # Errors
    /// When VBoxManage cannot be started (a missing program gives the install
    /// hint) or does not finish in time.
    pub(crate) async fn call(&self, args: &[&str]) -> Result<Outcome, ProviderError> {
        let subcommand = args.first().copied().unwrap_or_default();
        let limit = timeout_for(subcommand);
        tracing::debug!(program = %self.program.display(), ?args, "VBoxManage");
        let child = tokio::process::Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    config_error(format!(
                        "VBoxManage not found at {}: {INSTALL_HINT}",
                        self.program.display()
                    ))
                } else {
                    ProviderError::api_caused_by(
                        format!("VBoxManage {subcommand}"),
                        format!("cannot run {}", self.program.display()),
                        e,
                    )
                }
            })?;
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| ProviderError::Timeout {
                what: format!("VBoxManage {}", args.join(" ")),
                seconds: limit.as_secs(),
            })?
            .map_err(|e| {
                ProviderError::api_caused_by(
                    format!("VBoxManage {subcommand}"),
                    format!("waiting for {}", self.program.display()),
                    e,
                )
            })?;
        Ok(Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }

    /// Runs `VBoxManage ARGS` and returns its stdout; a non-zero exit is an
    /// error quoting stderr.
    ///
    /// # Errors
    /// See [`Self::call`], and any non-zero exit.
    pub(crate) async fn run(&self, args: &[&str]) -> Result<String, ProviderError> {
        let outcome = self.call(args).await?;
        if outcome.success() {
            Ok(outcome.stdout)
        } else {
            Err(outcome.error(args.first().copied().unwrap_or_default()))
        }
    }

    /// `list vms` as (name, uuid) pairs.
    pub(crate) async fn list_vms(&self) -> Result<Vec<(String, String)>, ProviderError> {
        Ok(parse_list_vms(&self.run(&["list", "vms"]).await?))
    }

    /// `showvminfo VM --machinereadable`; `None` when the VM is not registered.
    pub(crate) async fn vm_info(
        &self,
        vm: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ProviderError> {
        let outcome = self.call(&["showvminfo", vm, "--machinereadable"]).await?;
        if outcome.success() {
            Ok(Some(parse_machine_readable(&outcome.stdout)))
        } else if outcome.is_not_found() {
            Ok(None)
        } else {
            Err(outcome.error("showvminfo"))
        }
    }

    /// `guestproperty get VM PROPERTY`; `None` when it has no value.
    pub(crate) async fn get_property(
        &self,
        vm: &str,
        property: &str,
    ) -> Result<Option<String>, ProviderError> {
        let outcome = self.call(&["guestproperty", "get", vm, property]).await?;
        // "No value set!" comes with exit 0 (VirtualBox 6) or 1 (7.x).
        if outcome.stdout.trim() == "No value set!" {
            return Ok(None);
        }
        if !outcome.success() {
            return Err(outcome.error("guestproperty get"));
        }
        Ok(parse_property_value(&outcome.stdout))
    }

    /// `guestproperty set VM PROPERTY VALUE`.
    pub(crate) async fn set_property(
        &self,
        vm: &str,
        property: &str,
        value: &str,
    ) -> Result<(), ProviderError> {
        self.run(&["guestproperty", "set", vm, property, value])
            .await
            .map(drop)
    }
}

/// Parses `list vms`: one `"NAME" {UUID}` line per VM.
#[must_use]
pub fn parse_list_vms(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (name, uuid) = line.rsplit_once(' ')?;
            let uuid = uuid.strip_prefix('{')?.strip_suffix('}')?;
            let name = name.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some((name.to_owned(), uuid.to_owned()))
        })
        .collect()
}

/// Parses `--machinereadable` output: `key="value"` or `key=value` lines;
/// keys may be quoted too, and values escape `"` and `\` with a backslash.
#[must_use]
pub fn parse_machine_readable(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = split_key(line)?;
            Some((key, unquote(value)))
        })
        .collect()
}

/// Splits `key=value` at the `=` after the key (a quoted key may hold `=`).
fn split_key(line: &str) -> Option<(String, &str)> {
    if let Some(rest) = line.strip_prefix('"') {
        let end = rest.find("\"=")?;
        let key = rest.get(..end)?.to_owned();
        return Some((key, rest.get(end + 2..)?));
    }
    let (key, value) = line.split_once('=')?;
    Some((key.to_owned(), value))
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `guestproperty get` prints `Value: VALUE` (the value may span lines).
fn parse_property_value(stdout: &str) -> Option<String> {
    let value = stdout.strip_prefix("Value: ")?;
    Some(value.strip_suffix('\n').unwrap_or(value).to_owned())
}

/// One NAT port-forwarding rule: `name,proto,host ip,host port,guest ip,guest port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardRule {
    pub name: String,
    pub host_ip: String,
    pub host_port: u16,
    pub guest_port: u16,
}

/// The forwarding rules of NIC 1 (`Forwarding(N)="…"` keys).
pub(crate) fn forwarding_rules(info: &BTreeMap<String, String>) -> Vec<ForwardRule> {
    info.iter()
        .filter(|(k, _)| k.starts_with("Forwarding("))
        .filter_map(|(_, v)| {
            let fields: Vec<&str> = v.split(',').collect();
            let [name, proto, host_ip, host_port, _guest_ip, guest_port] = fields.as_slice() else {
                return None;
            };
            (*proto == "tcp").then_some(())?;
            Some(ForwardRule {
                name: (*name).to_owned(),
                host_ip: (*host_ip).to_owned(),
                host_port: host_port.parse().ok()?,
                guest_port: guest_port.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_vms() {
        let text = "\"prov-d-web-0\" {0b6f3c62-6b1c-4f1e-9a43-2a6f0a1b9c01}\n\"with space\" {11111111-2222-3333-4444-555555555555}\n<inaccessible> {x}\n";
        assert_eq!(
            parse_list_vms(text),
            vec![
                (
                    "prov-d-web-0".to_owned(),
                    "0b6f3c62-6b1c-4f1e-9a43-2a6f0a1b9c01".to_owned()
                ),
                (
                    "with space".to_owned(),
                    "11111111-2222-3333-4444-555555555555".to_owned()
                ),
            ]
        );
        assert!(parse_list_vms("").is_empty());
    }

    #[test]
    fn parses_machine_readable() {
        let text = "name=\"prov-d-web-0\"\nUUID=\"abc\"\ncpus=2\nmemory=1024\nVMState=\"running\"\n\"IDE Controller-0-0\"=\"/v/d.vdi\"\nForwarding(0)=\"ssh,tcp,127.0.0.1,2222,,22\"\ndescription=\"say \\\"hi\\\"\"\n";
        let info = parse_machine_readable(text);
        assert_eq!(info["name"], "prov-d-web-0");
        assert_eq!(info["cpus"], "2");
        assert_eq!(info["VMState"], "running");
        assert_eq!(info["IDE Controller-0-0"], "/v/d.vdi");
        assert_eq!(info["description"], "say \"hi\"");
        let rules = forwarding_rules(&info);
        assert_eq!(
            rules,
            vec![ForwardRule {
                name: "ssh".into(),
                host_ip: "127.0.0.1".into(),
                host_port: 2222,
                guest_port: 22
            }]
        );
    }

    #[test]
    fn parses_property_values() {
        assert_eq!(parse_property_value("Value: abc\n").as_deref(), Some("abc"));
        assert_eq!(
            parse_property_value("Value: a\nb\n").as_deref(),
            Some("a\nb")
        );
        assert_eq!(parse_property_value("No value set!\n"), None);
    }

    #[tokio::test]
    async fn missing_program_gives_install_hint() {
        let vb = VBoxManage::new("/nonexistent/VBoxManage".into());
        let err = vb.run(&["list", "vms"]).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("VBoxManage not found"), "{text}");
        assert!(text.contains("install VirtualBox"), "{text}");
    }

    #[tokio::test]
    async fn failures_quote_stderr_and_status() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = tmp.path().join("VBoxManage");
        std::fs::write(
            &exe,
            "#!/bin/sh\necho \"VBoxManage: error: Could not find a registered machine named '$2'\" >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let vb = VBoxManage::new(exe);
        let err = vb.run(&["startvm", "x"]).await.unwrap_err().to_string();
        assert!(
            err.contains("VBoxManage startvm failed: VBoxManage: error: Could not find a registered machine named 'x' (exit status 1)"),
            "{err}"
        );
        assert_eq!(vb.vm_info("x").await.unwrap(), None);
    }
}
