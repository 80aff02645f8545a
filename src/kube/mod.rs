//! Kubernetes clusters: the typed model a spec's `[kubernetes.NAME]` becomes,
//! its checks, the PKI prov owns for the `nixos` flavour (three CAs, a
//! service-account key pair, every leaf, the encryption-at-rest key), the
//! age-encrypted material beside the spec, the files each host receives,
//! kubeconfigs, and the generated NixOS module per host.

pub mod check;
pub mod cidr;
pub mod files;
pub mod kubeconfig;
pub mod material;
pub mod model;
pub mod nixos;
pub mod pki;
pub mod secret;

#[cfg(test)]
mod interop;
#[cfg(test)]
mod testing;
