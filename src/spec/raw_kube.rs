//! `[kubernetes.NAME]` and `[hosts.NAME.kubernetes]` as written, with spans.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::raw::{Str, StrList};

/// `[kubernetes.NAME]`: one cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    /// `nixos` (default: `services.kubernetes`, prov owns the PKI) or `k3s`.
    pub flavor: Option<Str>,
    /// The control-plane host clients reach the apiserver at.
    pub api_host: Option<Str>,
    /// Or an explicit endpoint, `https://HOST[:PORT]`.
    pub api_endpoint: Option<Str>,
    /// The services' range (default `10.0.0.0/24`, as the NixOS module's).
    pub service_cidr: Option<Str>,
    /// The pods' range (default `10.1.0.0/16`, as the NixOS module's).
    pub pod_cidr: Option<Str>,
    /// Renew a certificate this many days before it expires (default 30).
    pub renew_before_days: Option<Spanned<i64>>,
    /// How long one bring-up gate (etcd, apiserver, kubelet, node Ready)
    /// may take to pass, in seconds (default 300).
    pub gate_timeout_seconds: Option<Spanned<i64>>,
    /// age recipients the cluster's private keys are encrypted to beside
    /// the spec (default: `[state] encrypt_to`, else the deployer's key).
    pub recipients: Option<StrList>,
}

/// `[hosts.NAME.kubernetes]`: the host's part in a cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHostKube {
    /// The cluster's name in `[kubernetes.NAME]`.
    pub cluster: Str,
    /// `control-plane`, `worker`, or both.
    pub roles: StrList,
    /// Node labels.
    #[serde(default)]
    pub labels: BTreeMap<Str, Str>,
}
