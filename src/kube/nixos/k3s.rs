//! The `k3s` flavour's module body: `services.k3s` as server or agent,
//! joined by the shared token file; the first server initialises the
//! cluster (embedded etcd), every other member joins the API endpoint.

use super::{dns_service_ip, nix_list, Block};
use crate::kube::files::K3S_TOKEN_PATH;
use crate::kube::model::{Cluster, Member};

/// The body of the module for `member`.
pub(super) fn body(out: &mut String, cluster: &Cluster, member: &Member) {
    let mut block = Block { out, indent: 2 };
    let server = member.is_control_plane();
    let first = cluster.is_first_control_plane(member);
    block.nested("services.k3s", |k| {
        k.raw("enable", "true");
        k.string("role", if server { "server" } else { "agent" });
        k.comment("Written by prov before activation, mode 0400 (never the store).");
        k.string("tokenFile", K3S_TOKEN_PATH);
        if first {
            k.comment("The first server initialises the cluster (embedded etcd, so");
            k.comment("more servers can join later without a datastore migration).");
            k.raw("clusterInit", "true");
        } else {
            k.string("serverAddr", &cluster.api_endpoint.url());
        }
        k.string("nodeName", &member.node_name);
        if let Some(ip) = member.ips.first() {
            k.string("nodeIP", &ip.to_string());
        }
        if !member.labels.is_empty() {
            k.raw("nodeLabel", &nix_list(&member.label_pairs()));
        }
        if server && !member.is_worker() {
            k.raw(
                "nodeTaint",
                &nix_list(&["node-role.kubernetes.io/control-plane=true:NoSchedule"]),
            );
        }
        if server {
            let mut flags = vec![
                format!("--cluster-cidr={}", cluster.pod_cidr),
                format!("--service-cidr={}", cluster.service_cidr),
            ];
            if let Some(dns) = dns_service_ip(&cluster.service_cidr) {
                flags.push(format!("--cluster-dns={dns}"));
            }
            flags.push(format!("--tls-san={}", cluster.api_endpoint.host));
            if cluster.api_endpoint.port != crate::kube::model::DEFAULT_API_PORT {
                flags.push(format!("--https-listen-port={}", cluster.api_endpoint.port));
            }
            k.raw("extraFlags", &nix_list(&flags));
        }
    });
}
