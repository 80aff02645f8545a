//! Kubernetes on local hosts, end to end: examples/kubernetes.toml applied
//! with the stand-in systems of examples/kubernetes.nix, which run REAL etcd
//! with the certificates prov delivered, a TLS stand-in for the apiserver
//! (`openssl s_server -WWW`: prov's apiserver certificate, clients of prov's
//! CA only) and a kubelet stand-in. Chains are checked with openssl, the
//! admin kubeconfig with kubectl against the stand-in: TLS and kubeconfig
//! only, no real apiserver, kubelet or k3s can be installed here.
//!
//! Each test has loopback addresses of its own (127.0.0.130 and up), so its
//! etcd and apiserver stand-in do not meet another test's.

mod bring_up;
mod changes;
mod cluster;
mod leaks;
