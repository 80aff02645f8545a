//! Setting a run up for deploys: the deployer's key, authorized on local
//! hosts, and the shared deploy context.

use anyhow::Result;
use serde_json::Value;

use crate::cli::Cli;
use crate::command::Context;
use crate::deploy::{deployer_identity, existing_deployer_identity, DeployContext};
use crate::providers::Target;

impl Context {
    /// The deploy context of this run. Local hosts are given the deployer's
    /// public key to authorize (prov generates the key pair on first use,
    /// when `create_key`; else a key not made yet shows as
    /// [`crate::deploy::PENDING_KEY`]).
    ///
    /// # Errors
    /// When the deployer's key cannot be read or generated.
    pub fn deploy_context(&mut self, cli: &Cli, create_key: bool) -> Result<DeployContext> {
        let needs_key = self
            .spec
            .hosts
            .values()
            .any(|h| h.deploy.is_some() || h.target.receives_deployer_key())
            // Secrets travel over SSH too, also to hosts with no system.
            || !self.spec.secrets.is_empty();
        let identity = if needs_key {
            let (private, public) = if create_key {
                deployer_identity(&self.spec)?
            } else {
                existing_deployer_identity(&self.spec)?
            };
            for resource in &mut self.spec.resources {
                if Target::provider_receives_deployer_key(&resource.provider) {
                    resource.attributes.insert(
                        "authorized_keys".into(),
                        Value::Array(vec![Value::from(public.clone())]),
                    );
                }
            }
            private
        } else {
            std::path::PathBuf::new()
        };
        Ok(DeployContext {
            spec: self.spec.clone(),
            pool: crate::deploy::target::Pool::default(),
            identity,
            accept_new_host_keys: cli.accept_new_host_keys,
        })
    }
}
