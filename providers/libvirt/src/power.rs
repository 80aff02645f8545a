//! Starting and stopping a VM: boot with a bounded wait for SSH (pointing at
//! the console log when none comes), ACPI shutdown with a bounded wait, and
//! power-off.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use prov_provider::{machine, ProviderError};

use crate::attrs::{Nic, VmSpec};
use crate::conn::DomainState;
use crate::provider::LibvirtProvider;
use crate::xml::Layout;

/// Pause between two looks while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long one SSH banner probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `virsh destroy` may take to show the domain stopped.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the console log quoted in errors.
const CONSOLE_LINES: usize = 8;

impl LibvirtProvider {
    /// The last lines of the console log, when it is readable here.
    fn console_tail(&self, layout: &Layout) -> String {
        if !self.libvirt.is_local() {
            return String::new();
        }
        let Ok(text) = std::fs::read(&layout.console_log) else {
            return String::new();
        };
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').trim_end())
            .filter(|l| !l.is_empty())
            .collect();
        let tail = lines
            .get(lines.len().saturating_sub(CONSOLE_LINES)..)
            .unwrap_or_default();
        if tail.is_empty() {
            String::new()
        } else {
            format!("; its last lines:\n    {}", tail.join("\n    "))
        }
    }
    /// Where to reach the VM's sshd now: the forward, or a leased address.
    async fn ssh_target(
        &self,
        name: &str,
        spec: &VmSpec,
        port: Option<u16>,
    ) -> Result<Option<SocketAddr>, ProviderError> {
        match (&spec.nic, port) {
            (Nic::User { .. }, Some(port)) => {
                Ok(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
            }
            (Nic::User { .. }, None) => Ok(None),
            (Nic::Network(_), _) => Ok(self
                .libvirt
                .leased_addresses(name)
                .await?
                .first()
                .map(|a: &IpAddr| SocketAddr::new(*a, 22))),
        }
    }
    /// Starts the domain and waits (bounded) for an SSH banner; fails early
    /// when the domain stops. Errors point at the console log.
    pub(crate) async fn start_and_wait(
        &self,
        name: &str,
        spec: &VmSpec,
        port: Option<u16>,
    ) -> Result<(), ProviderError> {
        let layout = self.layout(name);
        self.libvirt.start(name).await?;
        let started = Instant::now();
        let limit = self.boot_timeout;
        let mut looks = 0_u32;
        let mut last_target = None;
        loop {
            if let Some(target) = self.ssh_target(name, spec, port).await? {
                if machine::probe(target, PROBE_TIMEOUT).await.is_some() {
                    tracing::debug!(name, elapsed = ?started.elapsed(), "SSH answered");
                    return Ok(());
                }
                last_target = Some(target);
            }
            looks += 1;
            if looks % 6 == 0 {
                let active = self.libvirt.domain(name).await?.is_some_and(|d| d.active);
                if !active {
                    return Err(ProviderError::api(
                        "boot VM",
                        format!(
                            "domain {name} stopped while booting; see its console log {}{}",
                            layout.console_log,
                            self.console_tail(&layout)
                        ),
                    ));
                }
            }
            if started.elapsed() >= limit {
                let at = match (&spec.nic, last_target) {
                    (_, Some(target)) => format!("SSH on {target}"),
                    (Nic::Network(network), None) => {
                        format!("a DHCP lease on network `{network}`")
                    }
                    (Nic::User { .. }, None) => "SSH".to_owned(),
                };
                return Err(ProviderError::Timeout {
                    what: format!(
                        "{at} from domain {name} (console log: {}, or `virsh -c {} console {name}`){}",
                        layout.console_log,
                        self.libvirt.uri(),
                        self.console_tail(&layout)
                    ),
                    seconds: limit.as_secs(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    /// Shuts the domain down: ACPI first, powered off after the bounded wait.
    pub(crate) async fn shut_down(&self, name: &str) -> Result<(), ProviderError> {
        let active = |d: Option<DomainState>| d.is_some_and(|d| d.active);
        if !active(self.libvirt.domain(name).await?) {
            return Ok(());
        }
        self.libvirt.shutdown(name).await?;
        let started = Instant::now();
        while started.elapsed() < self.shutdown_timeout {
            if !active(self.libvirt.domain(name).await?) {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        tracing::info!(name, "ACPI shutdown did not finish in time; powering off");
        self.power_off(name).await
    }
    /// Powers the domain off at once and waits until it is.
    pub(crate) async fn power_off(&self, name: &str) -> Result<(), ProviderError> {
        self.libvirt.destroy(name).await?;
        let started = Instant::now();
        loop {
            if !self.libvirt.domain(name).await?.is_some_and(|d| d.active) {
                return Ok(());
            }
            if started.elapsed() >= POWEROFF_TIMEOUT {
                return Err(ProviderError::Timeout {
                    what: format!("domain {name} to power off"),
                    seconds: POWEROFF_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
