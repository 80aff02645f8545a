//! One libvirt connection and the calls prov makes on it. libvirt's API
//! blocks, so every call runs on tokio's blocking pool; a connection is safe
//! to use from several threads at once. The calls on storage and on domains
//! are in the submodules; this module holds the connection and the helpers
//! they share.

mod domains;
mod storage;

use std::path::PathBuf;
use std::sync::Arc;

use prov_provider::ProviderError;
use virt::connect::Connect;
use virt::enumutil::Enum;
use virt::error::{Error as VirtError, ErrorNumber};

use crate::error::missing;

pub(crate) use domains::DomainState;
pub(crate) use storage::VolumeInfo;

/// How to start libvirtd, for errors.
pub(crate) const START_HINT: &str = "start libvirtd (`systemctl start libvirtd`; without systemd: `virtlogd -d && libvirtd -d`; prov's tests run scripts/libvirt-setup.sh)";

/// An open connection.
#[derive(Debug, Clone)]
pub(crate) struct Libvirt {
    conn: Arc<Connect>,
    uri: String,
}

/// Whether libvirt's `error` is `number`.
fn is(error: &VirtError, number: ErrorNumber) -> bool {
    error.code() == Enum::Known(number)
}

/// `Ok(())` for an error that is `number` (what is gone already), else the
/// error.
fn unless(result: Result<(), VirtError>, number: ErrorNumber) -> Result<(), VirtError> {
    result.or_else(|e| if is(&e, number) { Ok(()) } else { Err(e) })
}

fn worker_failed(e: tokio::task::JoinError) -> ProviderError {
    ProviderError::api_caused_by("libvirt", "a libvirt call did not finish", e)
}

impl Libvirt {
    /// Connects to `uri`.
    ///
    /// # Errors
    /// [`ProviderError::Config`] naming the URI and how to start libvirtd.
    pub(crate) async fn open(uri: &str) -> Result<Self, ProviderError> {
        let target = uri.to_owned();
        let conn = tokio::task::spawn_blocking(move || {
            // libvirt prints every error to stderr by default; prov reports
            // them itself.
            virt::error::clear_error_callback();
            Connect::open(Some(&target))
        })
        .await
        .map_err(worker_failed)?
        .map_err(|e| {
            missing(format!(
                "cannot connect to libvirt at {uri}: {}; is libvirtd running? {START_HINT}",
                e.message()
            ))
        })?;
        Ok(Self {
            conn: Arc::new(conn),
            uri: uri.to_owned(),
        })
    }

    /// The connection's URI as the spec gave it.
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether libvirtd runs on this machine (files named in domain XML are
    /// local files).
    pub(crate) fn is_local(&self) -> bool {
        let scheme_end = self.uri.find("://").map_or(0, |i| i + 3);
        !self.uri.contains('+') && self.uri[scheme_end..].starts_with('/')
    }

    async fn call<T, F>(&self, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, ProviderError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&conn))
            .await
            .map_err(worker_failed)?
    }

    /// The directory serial console logs go to.
    pub(crate) fn console_log_dir(&self) -> PathBuf {
        if self.uri.contains("/session") {
            let home =
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
            home.join(".cache/libvirt/qemu/log")
        } else {
            PathBuf::from("/var/log/libvirt/qemu")
        }
    }
}
