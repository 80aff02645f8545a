//! The `local` provider of prov: hosts as Linux namespace containers on the
//! machine running prov, for fast, real test deployments.
//!
//! A local host is a process tree started with
//! `setsid --fork sh run.sh` → `unshare --mount --uts --pid --fork --kill-child
//! --propagation private sh init.sh` → `exec sshd -D`. Inside its own mount
//! namespace it has a private `/nix` (a bind mount of `HOSTDIR/nix`), a tmpfs
//! on `/run/keys` (mode 0751), an empty `/root`, and an overlay over every
//! other top-level directory (`/etc`, `/var`, `/tmp`, …): the machine's files
//! show through, what the host writes lands in `HOSTDIR/layers/DIR/upper`,
//! so nothing prov writes to a host reaches the machine's own files; inside its own UTS
//! namespace its own hostname; inside its own PID namespace sshd is PID 1.
//! sshd listens on the host's own loopback address `127.0.0.N`, port 22, with
//! a host key prov generated. Hosts outlive the prov process: a later run
//! finds them alive through the files in their host directory.
//!
//! Layout: `HOSTDIR = ROOT/DEPLOYMENT/NAME`, where NAME is the resource address
//! made filesystem-safe (`web[0]` → `web-0`); the provider id is
//! `local-DEPLOYMENT-NAME`. The host directory holds `token`, `resource`,
//! `hostname`, `address`, `authorized_keys`, the host key, `sshd_config`, the
//! start scripts `run.sh` and `init.sh`, `pid` (the outer process), `init.pid`
//! (the namespace's PID 1 as the machine sees it), `sshd.log`, `start.log`,
//! `nix/`, `home/` and `layers/`. `nsenter --target $(cat HOSTDIR/init.pid) --mount --uts
//! --pid sh` enters a host by hand.
//!
//! Attribute vocabulary of the one kind, `host`: `hostname` and `address`
//! (force new; `address` is allocated when unset), `authorized_keys` (in
//! place); computed `ssh_host`, `ssh_port`, `host_key`, `pid`, `root`.
//!
//! `read`, `update` and `delete` refuse ids of another deployment (a
//! [`prov_provider::ProviderError::Config`]); `delete` of a host that is gone
//! succeeds. Choosing a loopback address and starting sshd on it happen under
//! the machine-wide lock `/run/lock/prov-local-addresses.lock`.
//!
//! Needs Linux, root and util-linux (`unshare`, `setsid`, `mount`) and
//! OpenSSH's `sshd` (host keys are generated in-process).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod address;
mod attrs;
mod environment;
mod error;
mod host_dir;
mod process;
mod provider;
mod settings;
mod sshd;

pub use environment::{check_environment, find_program, Tools};
pub use provider::LocalProvider;
pub use settings::{LocalSettings, DEFAULT_ROOT};

/// The provider's name as the spec writes it.
pub const PROVIDER_NAME: &str = "local";

/// The one resource kind this provider manages.
pub const KIND: &str = "host";

/// The one kind, its provider and its attributes.
pub(crate) const HOST: prov_provider::SingleKind = prov_provider::SingleKind {
    provider: PROVIDER_NAME,
    kind: KIND,
    schema: attrs::SCHEMA,
};

/// The port every local host's sshd listens on.
pub const SSH_PORT: u16 = 22;
