//! Where and how to reach a host: address, port, user, jump host and the
//! pinned host key, from the spec's overrides, the provider's report and
//! state. And the pool that keeps one connection per host for a whole run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use prov_provider::Address;
use prov_state::StateDocument;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::spec::{HostInfo, Spec};
use crate::ssh::{Auth, Connection, HostKeyCheck, JumpHost, Options, Target};

/// How to reach one host.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The host's address in the deployment.
    pub address: Address,
    /// The SSH target (host, port, user, jump).
    pub target: Target,
    /// The key the host must present, or `AcceptNew`.
    pub check: HostKeyCheck,
    /// Credentials.
    pub auth: Auth,
}

impl Endpoint {
    /// `user@host:port`, for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{}@{}:{}",
            self.target.user, self.target.host, self.target.port
        )
    }
}

/// Works out how to reach `address` from the spec, the provider's recorded
/// attributes and the pinned key in state.
///
/// # Errors
/// When no address or no host key is known (and new keys are not accepted).
pub fn endpoint(
    spec: &Spec,
    host: &HostInfo,
    address: &Address,
    doc: &StateDocument,
    identity: &std::path::Path,
    accept_new_host_keys: bool,
) -> Result<Endpoint> {
    let record = doc.resources.get(address);
    let attribute = |name: &str| -> Option<String> {
        record
            .and_then(|r| r.attributes.get(name))
            .and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    };
    let hostname = host
        .ssh
        .address
        .clone()
        .or_else(|| attribute("ssh_host"))
        .or_else(|| attribute("public_ip"))
        .or_else(|| attribute("private_ip"))
        .with_context(|| {
            format!("no address is known for {address}: set [hosts.{}.ssh] address, or apply so the provider reports one", host.name)
        })?;
    let port = host
        .ssh
        .port
        .or_else(|| attribute("ssh_port").and_then(|p| p.parse().ok()))
        .unwrap_or(22);
    let user = host
        .ssh
        .user
        .clone()
        .or_else(|| spec.deploy.user.clone())
        .unwrap_or_else(|| "root".to_owned());
    let pinned = host
        .host_key
        .clone()
        .or_else(|| doc.hosts.get(address).and_then(|h| h.host_key.clone()))
        .or_else(|| attribute("host_key"));
    let check = match pinned {
        Some(key) => HostKeyCheck::Pinned(key),
        None if accept_new_host_keys => HostKeyCheck::AcceptNew,
        None => bail!(
            "no SSH host key is pinned for {address}: set host_key in [hosts.{}], or run once with --accept-new-host-keys to record the key the host presents",
            host.name
        ),
    };
    let jump = match &host.ssh.jump {
        None => None,
        Some(j) => {
            let recorded = doc.hosts.get(address).and_then(|h| h.jump_host_key.clone());
            let check = match (j.host_key.clone().or(recorded), accept_new_host_keys) {
                (Some(key), _) => HostKeyCheck::Pinned(key),
                (None, true) => HostKeyCheck::AcceptNew,
                (None, false) => bail!(
                    "no SSH host key is pinned for the jump host {} of {address}: set host_key in [hosts.{}.ssh.jump], or run with --accept-new-host-keys",
                    j.address,
                    host.name
                ),
            };
            Some(Box::new(JumpHost {
                target: Target {
                    host: j.address.clone(),
                    port: j.port,
                    user: j.user.clone(),
                    jump: None,
                },
                check,
            }))
        }
    };
    let identity = host
        .ssh
        .identity_file
        .clone()
        .unwrap_or_else(|| identity.to_path_buf());
    Ok(Endpoint {
        address: address.clone(),
        target: Target {
            host: hostname,
            port,
            user,
            jump,
        },
        check,
        auth: Auth {
            identity_files: vec![identity],
            use_agent: spec.deploy.use_agent,
            agent_socket: None,
        },
    })
}

/// The spec's host at `address` and how to reach it, from the state in
/// `session`.
///
/// # Errors
/// When the address is no host of the spec, or cannot be reached (see
/// [`endpoint`]).
pub async fn host_endpoint<'a>(
    ctx: &'a super::DeployContext,
    session: &tokio::sync::Mutex<crate::session::StateSession>,
    address: &Address,
) -> Result<(&'a HostInfo, Endpoint)> {
    let info = ctx
        .spec
        .hosts
        .get(address)
        .with_context(|| format!("{address} is not a host of the spec"))?;
    let s = session.lock().await;
    let endpoint = ctx.endpoint(info, address, &s.doc)?;
    Ok((info, endpoint))
}

/// How to reach `address`, a host that left the spec, from what state
/// recorded when prov last reached it: the address, user and jump host, and
/// the pinned keys. Never a blind accept.
///
/// # Errors
/// When state holds no address or no pinned key for it.
pub async fn recorded_endpoint(
    ctx: &super::DeployContext,
    session: &tokio::sync::Mutex<crate::session::StateSession>,
    address: &Address,
) -> Result<Endpoint> {
    let s = session.lock().await;
    let record = s
        .doc
        .hosts
        .get(address)
        .with_context(|| format!("state has no record of {address}"))?;
    let reach = record
        .reach
        .as_ref()
        .with_context(|| format!("state records no address for {address}"))?;
    let key = record
        .host_key
        .clone()
        .with_context(|| format!("state pins no host key for {address}"))?;
    let jump =
        match &reach.jump {
            None => None,
            Some(j) => Some(Box::new(JumpHost {
                target: Target::new(j.host.clone(), j.port, j.user.clone()),
                check: HostKeyCheck::Pinned(record.jump_host_key.clone().with_context(|| {
                    format!("state pins no key for the jump host of {address}")
                })?),
            })),
        };
    Ok(Endpoint {
        address: address.clone(),
        target: Target {
            host: reach.host.clone(),
            port: reach.port,
            user: reach.user.clone(),
            jump,
        },
        check: HostKeyCheck::Pinned(key),
        auth: Auth {
            // The spec may no longer need a key of its own: use the
            // deployer's all the same.
            identity_files: vec![match &ctx.deployer {
                Some(deployer) => deployer.private.clone(),
                None => super::Deployer::ensure(&ctx.spec)?.private,
            }],
            use_agent: ctx.spec.deploy.use_agent,
            agent_socket: None,
        },
    })
}

/// What state keeps of `endpoint` to reach it again later.
#[must_use]
pub fn reach_record(endpoint: &Endpoint) -> prov_state::ReachRecord {
    let hop = |t: &Target| prov_state::ReachRecord {
        host: t.host.clone(),
        port: t.port,
        user: t.user.clone(),
        jump: None,
    };
    prov_state::ReachRecord {
        jump: endpoint
            .target
            .jump
            .as_ref()
            .map(|j| Box::new(hop(&j.target))),
        ..hop(&endpoint.target)
    }
}

/// One connection per host for the whole run (plan and apply share it).
#[derive(Debug, Default, Clone)]
pub struct Pool {
    connections: Arc<Mutex<BTreeMap<Address, Arc<Connection>>>>,
}

/// Connection settings used for every host.
pub fn options() -> Options {
    Options {
        connect_timeout: Duration::from_secs(10),
        keepalive: Duration::from_secs(15),
        ..Options::default()
    }
}

impl Pool {
    /// The open connection to `endpoint`, opening it if needed.
    ///
    /// # Errors
    /// When the host cannot be reached or presents another key.
    pub async fn get(&self, endpoint: &Endpoint) -> Result<Arc<Connection>> {
        if let Some(connection) = self.connections.lock().await.get(&endpoint.address) {
            return Ok(Arc::clone(connection));
        }
        let connection = Arc::new(fresh(endpoint, options()).await?);
        self.connections
            .lock()
            .await
            .insert(endpoint.address.clone(), Arc::clone(&connection));
        Ok(connection)
    }

    /// Forgets the connection to `address` (after it broke).
    pub async fn drop_connection(&self, address: &Address) {
        self.connections.lock().await.remove(address);
    }
}

/// A new connection, outside the pool (confirmation must use a new one).
///
/// # Errors
/// When the host cannot be reached or presents another key.
pub async fn fresh(endpoint: &Endpoint, options: Options) -> Result<Connection> {
    Connection::connect(&endpoint.target, &endpoint.check, &endpoint.auth, &options)
        .await
        .with_context(|| {
            format!(
                "connecting to {} ({})",
                endpoint.address,
                endpoint.describe()
            )
        })
}
