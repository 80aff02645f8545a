//! The `nixos` flavour's module body: `services.kubernetes` with
//! `easyCerts = false` and prov's files, `services.etcd` with TLS, flannel's
//! kubeconfig, and the addon manager's credentials.

use super::{dns_service_ip, nix_list, Block};
use crate::kube::files::{
    certificate_path as cert, key_path as key, secrets_file, ADDON_MANAGER_KUBECONFIG,
    CLUSTER_ADMIN_KUBECONFIG, ENCRYPTION_CONFIG, FLANNEL_KUBECONFIG,
};
use crate::kube::model::{host_port, Cluster, Member};
use crate::kube::pki::Kind;

/// The body of the module for `member`.
pub(super) fn body(out: &mut String, cluster: &Cluster, member: &Member) {
    let mut block = Block { out, indent: 2 };
    block.nested("services.kubernetes", |k| {
        let mut roles = Vec::new();
        if member.is_control_plane() {
            roles.push("master");
        }
        if member.is_worker() {
            roles.push("node");
        }
        k.raw("roles", &nix_list(&roles));
        k.string("masterAddress", &cluster.api_endpoint.host);
        k.string("apiserverAddress", &cluster.api_endpoint.url());
        k.comment("prov issues every certificate; no cfssl, certmgr or join token.");
        k.raw("easyCerts", "false");
        k.string("caFile", &cert(Kind::KubernetesCa));
        k.string("clusterCidr", &cluster.pod_cidr.to_string());
        if let Some(dns) = dns_service_ip(&cluster.service_cidr) {
            k.string("addons.dns.clusterIp", &dns.to_string());
        }
        kubelet(k, cluster, member);
        k.nested("proxy", |p| {
            p.string("hostname", &member.node_name);
            client_kubeconfig(p, Kind::KubeProxyClient);
        });
        if member.is_control_plane() {
            apiserver(k, cluster, member);
            k.nested("controllerManager", |c| {
                c.string("serviceAccountKeyFile", &key(Kind::ServiceAccount));
                c.string("rootCaFile", &cert(Kind::KubernetesCa));
                c.string("tlsCertFile", &cert(Kind::ControllerManager));
                c.string("tlsKeyFile", &key(Kind::ControllerManager));
                client_kubeconfig(c, Kind::ControllerManagerClient);
            });
            k.nested("scheduler", |s| client_kubeconfig(s, Kind::SchedulerClient));
        }
    });
    block.string(
        "services.flannel.kubeconfig",
        &secrets_file(FLANNEL_KUBECONFIG),
    );
    if member.is_control_plane() {
        etcd(&mut block, member);
        addon_manager(&mut block);
    }
}

/// `kubelet = { … };`: identity, serving certificate, DNS, labels.
fn kubelet(k: &mut Block<'_>, cluster: &Cluster, member: &Member) {
    k.nested("kubelet", |l| {
        l.comment("The name its certificate says: system:node:NAME.");
        l.string("hostname", &member.node_name);
        if let Some(ip) = member.ips.first() {
            l.string("nodeIp", &ip.to_string());
        }
        if let Some(dns) = dns_service_ip(&cluster.service_cidr) {
            l.raw("clusterDns", &nix_list(&[dns.to_string()]));
        }
        l.string("clientCaFile", &cert(Kind::KubernetesCa));
        l.string("tlsCertFile", &cert(Kind::Kubelet));
        l.string("tlsKeyFile", &key(Kind::Kubelet));
        client_kubeconfig(l, Kind::KubeletClient);
        if !member.labels.is_empty() {
            let labels = member.label_pairs().join(",");
            l.string("extraOpts", &format!("--node-labels={labels}"));
        }
    });
}

/// `apiserver = { … };`.
fn apiserver(k: &mut Block<'_>, cluster: &Cluster, member: &Member) {
    k.nested("apiserver", |a| {
        if let Some(ip) = member.ips.first() {
            a.string("advertiseAddress", &ip.to_string());
        }
        a.raw("securePort", &cluster.api_endpoint.port.to_string());
        a.string("serviceClusterIpRange", &cluster.service_cidr.to_string());
        a.string("clientCaFile", &cert(Kind::KubernetesCa));
        a.string("tlsCertFile", &cert(Kind::ApiServer));
        a.string("tlsKeyFile", &key(Kind::ApiServer));
        a.string("kubeletClientCaFile", &cert(Kind::KubernetesCa));
        a.string("kubeletClientCertFile", &cert(Kind::ApiServerKubeletClient));
        a.string("kubeletClientKeyFile", &key(Kind::ApiServerKubeletClient));
        a.string("proxyClientCertFile", &cert(Kind::ApiServerProxyClient));
        a.string("proxyClientKeyFile", &key(Kind::ApiServerProxyClient));
        a.string("serviceAccountKeyFile", &cert(Kind::ServiceAccount));
        a.string("serviceAccountSigningKeyFile", &key(Kind::ServiceAccount));
        a.nested("etcd", |e| {
            e.raw("servers", &nix_list(&["https://127.0.0.1:2379"]));
            e.string("caFile", &cert(Kind::EtcdCa));
            e.string("certFile", &cert(Kind::ApiServerEtcdClient));
            e.string("keyFile", &key(Kind::ApiServerEtcdClient));
        });
        let options = [
            format!(
                "--encryption-provider-config={}",
                secrets_file(ENCRYPTION_CONFIG)
            ),
            format!(
                "--requestheader-client-ca-file={}",
                cert(Kind::FrontProxyCa)
            ),
            "--requestheader-allowed-names=front-proxy-client".to_owned(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_owned(),
            "--requestheader-group-headers=X-Remote-Group".to_owned(),
            "--requestheader-username-headers=X-Remote-User".to_owned(),
        ];
        a.string("extraOpts", &options.join(" "));
    });
}

/// `kubeconfig = { certFile = …; keyFile = …; };` (server and CA come from
/// `apiserverAddress` and `caFile`).
fn client_kubeconfig(block: &mut Block<'_>, kind: Kind) {
    block.nested("kubeconfig", |c| {
        c.string("certFile", &cert(kind));
        c.string("keyFile", &key(kind));
    });
}

/// `services.etcd`: TLS for clients and peers, client certificates
/// required, one member (the NixOS module runs one control plane).
fn etcd(block: &mut Block<'_>, member: &Member) {
    let host = member.reachable_host();
    block.nested("services.etcd", |e| {
        e.string("name", &member.node_name);
        e.string("certFile", &cert(Kind::Etcd));
        e.string("keyFile", &key(Kind::Etcd));
        e.string("trustedCaFile", &cert(Kind::EtcdCa));
        e.string("peerCertFile", &cert(Kind::EtcdPeer));
        e.string("peerKeyFile", &key(Kind::EtcdPeer));
        e.string("peerTrustedCaFile", &cert(Kind::EtcdCa));
        e.raw("clientCertAuth", "true");
        e.raw("peerClientCertAuth", "true");
        e.raw("listenClientUrls", &nix_list(&["https://0.0.0.0:2379"]));
        e.raw(
            "advertiseClientUrls",
            &nix_list(&[format!("https://{}", host_port(&host, 2379))]),
        );
        e.raw("listenPeerUrls", &nix_list(&["https://0.0.0.0:2380"]));
        let peer = format!("https://{}", host_port(&host, 2380));
        e.raw("initialAdvertisePeerUrls", &nix_list(&[&peer]));
        e.raw(
            "initialCluster",
            &nix_list(&[format!("{}={peer}", member.node_name)]),
        );
    });
}

/// The addon manager's credentials, and the bootstrap addons applied as
/// cluster-admin before it starts (what pki.nix does with easyCerts).
fn addon_manager(block: &mut Block<'_>) {
    block.nested("systemd.services.kube-addon-manager", |s| {
        s.string(
            "environment.KUBECONFIG",
            &secrets_file(ADDON_MANAGER_KUBECONFIG),
        );
        s.raw(
            "serviceConfig.PermissionsStartOnly",
            "lib.mkIf (config.services.kubernetes.addonManager.bootstrapAddons != { }) true",
        );
        let admin = secrets_file(CLUSTER_ADMIN_KUBECONFIG);
        s.raw(
            "preStart",
            &format!(
                "lib.mkIf (config.services.kubernetes.addonManager.bootstrapAddons != {{ }}) (\n\
                 {pad}let\n\
                 {pad}  files = lib.mapAttrsToList (name: addon: pkgs.writeText \"${{name}}.json\" (builtins.toJSON addon))\n\
                 {pad}    config.services.kubernetes.addonManager.bootstrapAddons;\n\
                 {pad}in ''\n\
                 {pad}  export KUBECONFIG={admin}\n\
                 {pad}  ${{config.services.kubernetes.package}}/bin/kubectl apply -f ${{lib.concatStringsSep \" -f \" files}}\n\
                 {pad}'')",
                pad = " ".repeat(6)
            ),
        );
    });
}
