//! Starting and stopping a VM: `startvm` with a bounded wait for SSH (and
//! for the host key of its seed), ACPI shutdown with a bounded wait,
//! power-off, and removal with its disks.

use std::time::{Duration, Instant};

use prov_provider::machine;
use prov_provider::ProviderError;

use crate::provider::VirtualBoxProvider;

/// How long a VM may take from `startvm` to an SSH banner.
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an ACPI shutdown may take before prov powers the VM off.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `controlvm poweroff` may take to show `poweroff`.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long one SSH banner probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl VirtualBoxProvider {
    /// The VM's `VMState`, `None` when it is not registered.
    async fn vm_state(&self, vm: &str) -> Result<Option<String>, ProviderError> {
        Ok(self
            .vbox
            .vm_info(vm)
            .await?
            .map(|info| info.get("VMState").cloned().unwrap_or_default()))
    }

    /// Waits until the VM shows `poweroff` (or any stopped state).
    async fn wait_stopped(&self, vm: &str, limit: Duration) -> Result<bool, ProviderError> {
        let start = Instant::now();
        loop {
            match self.vm_state(vm).await?.as_deref() {
                None | Some("poweroff" | "aborted" | "saved") => return Ok(true),
                Some(_) => {}
            }
            if start.elapsed() >= limit {
                return Ok(false);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Powers the VM off: ACPI shutdown first, `poweroff` after the bounded
    /// wait. Nothing to do for a VM that is not running.
    pub(crate) async fn shut_down(&self, vm: &str) -> Result<(), ProviderError> {
        if self.wait_stopped(vm, Duration::ZERO).await? {
            return Ok(());
        }
        let acpi = self
            .vbox
            .call(&["controlvm", vm, "acpipowerbutton"])
            .await?;
        if acpi.code == Some(0) && self.wait_stopped(vm, self.shutdown_timeout).await? {
            return Ok(());
        }
        tracing::info!(vm, "ACPI shutdown did not finish in time; powering off");
        self.power_off(vm).await
    }

    /// `controlvm VM poweroff`, then a bounded wait for `poweroff`. A VM that
    /// is not running (or not registered) is fine.
    async fn power_off(&self, vm: &str) -> Result<(), ProviderError> {
        let outcome = self.vbox.call(&["controlvm", vm, "poweroff"]).await?;
        if outcome.code != Some(0)
            && !outcome.stderr.contains("is not currently running")
            && !outcome.is_not_found()
        {
            return Err(outcome.error("controlvm poweroff"));
        }
        if self.wait_stopped(vm, POWEROFF_TIMEOUT).await? {
            Ok(())
        } else {
            Err(ProviderError::Timeout {
                what: format!("VM {vm} to power off"),
                seconds: POWEROFF_TIMEOUT.as_secs(),
            })
        }
    }

    /// Powers the VM off and unregisters it with its disks. A VM that is not
    /// registered is fine. `unregistervm` is retried while the VM's session is
    /// still being unlocked after the power-off.
    pub(crate) async fn remove(&self, vm: &str) -> Result<(), ProviderError> {
        self.power_off(vm).await?;
        let start = Instant::now();
        loop {
            let outcome = self.vbox.call(&["unregistervm", vm, "--delete"]).await?;
            if outcome.code == Some(0) || outcome.is_not_found() {
                return Ok(());
            }
            if !outcome.stderr.contains("locked") || start.elapsed() >= POWEROFF_TIMEOUT {
                return Err(outcome.error("unregistervm"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `startvm VM --type headless`, then a bounded wait for an SSH banner on
    /// `127.0.0.1:port`; fails early when the VM stops running.
    pub(crate) async fn start_and_wait(&self, vm: &str, port: u16) -> Result<(), ProviderError> {
        self.vbox
            .run(&["startvm", vm, "--type", "headless"])
            .await?;
        let start = Instant::now();
        let mut looks = 0_u32;
        loop {
            if machine::probe(([127, 0, 0, 1], port).into(), PROBE_TIMEOUT)
                .await
                .is_some()
            {
                return Ok(());
            }
            looks += 1;
            if looks % 8 == 0 {
                let state = self.vm_state(vm).await?;
                if state.as_deref() != Some("running") {
                    return Err(ProviderError::api(
                        "startvm",
                        format!(
                            "VM {vm} stopped while booting (VMState {})",
                            state.as_deref().unwrap_or("unregistered")
                        ),
                    ));
                }
            }
            if start.elapsed() >= self.boot_timeout {
                return Err(ProviderError::Timeout {
                    what: format!("SSH on 127.0.0.1:{port} (the NAT forward of VM {vm})"),
                    seconds: self.boot_timeout.as_secs(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until the VM's sshd presents `expected`, the host key of its
    /// seed: then the guest has read the seed, and the seed can go.
    pub(crate) async fn await_host_key(
        &self,
        vm: &str,
        port: u16,
        expected: &str,
    ) -> Result<(), ProviderError> {
        let start = Instant::now();
        loop {
            let presented =
                machine::scan_host_key(([127, 0, 0, 1], port).into(), PROBE_TIMEOUT).await;
            match presented {
                Some(key) if key == expected => return Ok(()),
                Some(key) => {
                    return Err(ProviderError::api(
                        "startvm",
                        format!(
                            "VM {vm} presents the host key {key}, not the one prov gave it in its seed (does the base image read a cloud-init NoCloud seed?)"
                        ),
                    ))
                }
                None if start.elapsed() >= self.boot_timeout => {
                    return Err(ProviderError::Timeout {
                        what: format!("the host key of VM {vm} on 127.0.0.1:{port} (ssh-keyscan)"),
                        seconds: self.boot_timeout.as_secs(),
                    })
                }
                None => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }
}
