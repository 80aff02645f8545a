# Stand-in Kubernetes members, buildable without nixpkgs, for
# kubernetes.toml and prov's Kubernetes tests.
#
# A real member's configuration imports the module prov generates for it:
#
#   imports = [ <prov/kubernetes.nix> ];
#
# prov builds every member with `-I prov=DIR`, DIR holding that module. With
# no nixpkgs here there is no NixOS to import it into, so each stand-in reads
# it as text instead (`builtins.readFile <prov/kubernetes.nix>`: the build
# fails without prov's `-I`), keeps a copy in its toplevel
# (prov-kubernetes.nix, for the tests), and takes from it what its
# switch-to-configuration starts, mimicking what the NixOS module would run:
#
#   control plane (nixos flavour): the `etcd` and `kubernetes` users and
#     groups, then REAL etcd (Debian's etcd-server) with prov's certificates
#     at the module's paths, client certificates required; then an apiserver
#     stand-in: `openssl s_server -WWW` presenting prov's apiserver
#     certificate, requiring a client certificate from prov's CA, serving
#     `livez` and `readyz` ("ok") once etcd answers the apiserver's etcd
#     client certificate, and the `api/v1/nodes/NAME` objects the workers
#     register. TLS only: there is no apiserver behind it.
#   worker: the `kubernetes` user and group; a kubelet stand-in that, once
#     its certificates are there, checks its client identity against the
#     apiserver stand-in (mutual TLS, curl), registers its node object
#     (Ready) there, and answers /healthz on 127.0.0.1:10248.
#   k3s flavour: a `k3s` command on the server answering
#     `k3s kubectl get --raw=/readyz` once the token file is in place, and the
#     kubelet /healthz on agents once they have it.
#
# Each activation is recorded with its time in
# /nix/var/prov-standin/activations (`SECONDS GOAL SYSTEM`), what a stand-in
# started and when in /nix/var/prov-standin/*.log and readyz-at.
#
# Everything prov does around it is the real protocol: building with
# nix-build and `-I prov=…`, copying the closure over SSH, the secrets
# (certificates, keys, kubeconfigs, token) uploaded with their owners and
# modes, activation, confirmation, gates, rollback.
#
# prov local hosts share the machine's network namespace: each listens on its
# own loopback address (127.0.0.N), so etcd and the apiserver stand-in listen
# on the host's address, not 0.0.0.0 as the module says. The kubelet's
# /healthz port is fixed at 127.0.0.1:10248 (prov's gate asks there, on the
# host), so one answer there serves every local host on the machine: each
# worker tries to serve it and retries while another holds the port. What
# tells the workers apart is their node object, which each registers itself.
# The apiserver stand-in serves its files from
# /run/prov-standin/apiserver-ADDRESS-PORT: /run is the one directory local
# hosts share (their /etc, /var, /tmp, … are overlays of their own), which is
# how a worker reaches "the API" to register. Processes started here live in
# the host's PID namespace and go when the host is destroyed.
#
#   node               any member: what it runs follows the generated module
#   nodeWithoutReadyz  the same, but the apiserver stand-in never serves
#                      /readyz (a control plane that never gets ready)
#   mkNode { withholdReadyz ? false; version ? "1"; }
let
  module = builtins.readFile <prov/kubernetes.nix>;
  lines = builtins.filter builtins.isString (builtins.split "\n" module);

  # The first match of `pattern` (one group) on a line of the module, or "".
  first = pattern:
    let found = builtins.filter (m: m != null) (map (builtins.match pattern) lines);
    in if found == [ ] then "" else builtins.head (builtins.head found);
  # The value of the first `NAME = "VALUE";` line.
  setting = name: first " *${name} = \"([^\"]*)\";";
  # The only element of the first `NAME = [ "VALUE" ];` line.
  single = name: first " *${name} = \\[ \"([^\"]*)\" ];";
  has = pattern: builtins.any (line: builtins.match pattern line != null) lines;

  k3s = has " *services\\.k3s = \\{";
  controlPlane = if k3s then setting "role" == "server" else has " *roles = \\[.*\"master\".*";
  worker = if k3s then setting "role" == "agent" else has " *roles = \\[.*\"node\".*";

  secrets = "/var/lib/kubernetes/secrets";
  state = "/nix/var/prov-standin";

  # What every stand-in script starts with.
  prelude = ''
    #!/bin/sh
    PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    export PATH
    S=${secrets}
    state=${state}
    # Waits (bounded: 120 s) until every file named exists and is not empty:
    # prov uploads the keys owned by users the activation creates after it.
    wait_files() {
      tries=0
      for f in "$@"; do
        while [ ! -s "$f" ]; do
          tries=$((tries + 1))
          if [ "$tries" -gt 600 ]; then echo "$(date +%s.%N) gave up waiting for $f"; return 1; fi
          sleep 0.2
        done
      done
    }
    # Runs "$@" as USER, as the NixOS module's units do.
    as() { user=$1; shift; setpriv --reuid "$user" --regid "$user" --init-groups "$@"; }
    umask 022
  '';

  mkNode = { withholdReadyz ? false, version ? "1" }:
    let
      apiserverAddress = setting "apiserverAddress";
      # The apiserver's host and port as the generated module says.
      apiHost = setting "advertiseAddress";
      apiPort = first " *securePort = ([0-9]+);";
      # Where "the API" keeps its files, shared by the hosts through /run.
      apiDirOf = url: "/run/prov-standin/apiserver-" + builtins.replaceStrings [ "https://" ":" "[" "]" ] [ "" "-" "" "" ] url;

      etcdStandin = ''
        ${prelude}
        # etcd as services.etcd would run it, with prov's certificates.
        name=$1 client=$2 peer=$3
        wait_files $S/etcd.pem $S/etcd-key.pem $S/etcd-peer.pem $S/etcd-peer-key.pem $S/etcd-ca.pem || exit 1
        mkdir -p /var/lib/etcd && chown etcd:etcd /var/lib/etcd && chmod 0700 /var/lib/etcd
        echo "$(date +%s.%N) starting etcd on $client"
        exec setpriv --reuid etcd --regid etcd --init-groups \
          etcd --name "$name" --data-dir /var/lib/etcd \
          --listen-client-urls "$client" --advertise-client-urls "$client" \
          --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
          --initial-cluster "$name=$peer" \
          --cert-file $S/etcd.pem --key-file $S/etcd-key.pem \
          --trusted-ca-file $S/etcd-ca.pem --client-cert-auth \
          --peer-cert-file $S/etcd-peer.pem --peer-key-file $S/etcd-peer-key.pem \
          --peer-trusted-ca-file $S/etcd-ca.pem --peer-client-cert-auth
      '';

      apiserverStandin = ''
        ${prelude}
        # A TLS stand-in for kube-apiserver: its certificate, clients of its CA only.
        host=$1 port=$2 www=$3 etcd=$4 withhold=$5
        wait_files $S/ca.pem $S/kube-apiserver.pem $S/kube-apiserver-key.pem \
          $S/etcd-ca.pem $S/kube-apiserver-etcd-client.pem $S/kube-apiserver-etcd-client-key.pem || exit 1
        rm -rf "$www"
        mkdir -p "$www/api/v1/nodes"
        # Like the apiserver, ready once etcd answers its etcd client certificate.
        tries=0
        until as kubernetes etcdctl --endpoints "$etcd" --cacert $S/etcd-ca.pem \
            --cert $S/kube-apiserver-etcd-client.pem --key $S/kube-apiserver-etcd-client-key.pem \
            --dial-timeout 2s --command-timeout 3s endpoint health; do
          tries=$((tries + 1))
          if [ "$tries" -gt 120 ]; then echo "$(date +%s.%N) etcd never answered"; exit 1; fi
          sleep 0.5
        done
        echo ok > "$www/livez"
        if [ "$withhold" = withhold ]; then
          echo "$(date +%s.%N) withholding /readyz"
        else
          echo ok > "$www/readyz"
          date +%s.%N > $state/readyz-at
        fi
        echo "$(date +%s.%N) serving https://$host:$port"
        cd "$www" && exec setpriv --reuid kubernetes --regid kubernetes --init-groups \
          openssl s_server -accept "$host:$port" -cert $S/kube-apiserver.pem \
          -key $S/kube-apiserver-key.pem -CAfile $S/ca.pem -Verify 1 -verify_return_error -WWW -quiet
      '';

      kubeletStandin = ''
        ${prelude}
        # A kubelet stand-in: its identity checked by the API, its node
        # registered, /healthz answered.
        node=$1 api=$2 nodes=$3 wait=$4
        wait_files $wait || exit 1
        if [ -n "$api" ]; then
          tries=0
          until as kubernetes curl -sS --fail --max-time 5 --cacert $S/ca.pem \
              --cert $S/kubelet-client.pem --key $S/kubelet-client-key.pem "$api/livez" >/dev/null; do
            tries=$((tries + 1))
            if [ "$tries" -gt 120 ]; then echo "$(date +%s.%N) the API refused $node"; exit 1; fi
            sleep 0.5
          done
          mkdir -p "$nodes"
          printf '{"kind":"Node","apiVersion":"v1","metadata":{"name":"%s"},"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}\n' "$node" > "$nodes/.$node.tmp"
          mv -f "$nodes/.$node.tmp" "$nodes/$node"
          echo "$(date +%s.%N) registered node $node"
        fi
        dir=/var/lib/kubelet-standin
        mkdir -p $dir && echo ok > $dir/healthz
        # One port for every local host on the machine: retry while another holds it.
        while :; do
          python3 -m http.server --bind 127.0.0.1 --directory $dir 10248 2>/dev/null
          sleep 1
        done
      '';

      k3sCommand = ''
        #!/bin/sh
        # Stand-in for k3s on a server: `k3s kubectl get --raw=/readyz` answers
        # ok once the join token prov delivers is in place.
        token=${setting "tokenFile"}
        if [ "$*" = "kubectl get --raw=/readyz" ] && [ -s "$token" ]; then echo ok; exit 0; fi
        echo "k3s stand-in: not ready ($*)" >&2
        exit 1
      '';

      switch = ''
        #!/bin/sh
        # Stand-in for switch-to-configuration: records the goal and the time,
        # then starts what the generated module would start on this host.
        PATH=/usr/sbin:/usr/bin:/sbin:/bin
        export PATH
        state=${state}
        out=@out@
        mkdir -p $state
        echo "$(date +%s.%N) $1 $out" >> $state/activations
        case $1 in switch|test) ;; *) exit 0 ;; esac

        # Users and groups NixOS makes at activation (this host's /etc is its own overlay).
        account() {
          getent group "$1" >/dev/null || groupadd --system "$1"
          getent passwd "$1" >/dev/null || useradd --system --no-create-home -g "$1" -d "/var/lib/$1" -s /usr/sbin/nologin "$1"
        }
        # Stops what an earlier activation started (a whole process group).
        stop() {
          for name in "$@"; do
            [ -s $state/$name.pid ] || continue
            pid=$(cat $state/$name.pid)
            kill -TERM "-$pid" 2>/dev/null
            tries=0
            while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 50 ]; do sleep 0.1; tries=$((tries + 1)); done
            kill -KILL "-$pid" 2>/dev/null
            rm -f $state/$name.pid
          done
        }
        # Starts "$@" in the background in a session of its own, past the end
        # of the SSH session that activated it.
        start() {
          name=$1
          shift
          setsid "$@" </dev/null >>$state/$name.log 2>&1 &
          echo $! > $state/$name.pid
        }
        stop etcd apiserver kubelet
      '' + (if k3s then ''
        ${if controlPlane then ''
          mkdir -p /usr/local/bin
          cp $out/libexec/k3s /usr/local/bin/k3s.tmp && mv -f /usr/local/bin/k3s.tmp /usr/local/bin/k3s
        '' else ""}
        ${if worker then ''
          start kubelet $out/libexec/kubelet-standin ${setting "nodeName"} "" "" ${setting "tokenFile"}
        '' else ""}
      '' else ''
        account kubernetes
        ${if controlPlane then ''
          account etcd
          start etcd $out/libexec/etcd-standin ${setting "name"} ${single "advertiseClientUrls"} ${single "initialAdvertisePeerUrls"}
          start apiserver $out/libexec/apiserver-standin ${apiHost} ${apiPort} ${apiDirOf "https://${apiHost}:${apiPort}"} ${single "advertiseClientUrls"} ${if withholdReadyz then "withhold" else "serve"}
        '' else ""}
        ${if worker then ''
          start kubelet $out/libexec/kubelet-standin ${setting "hostname"} ${apiserverAddress} ${apiDirOf apiserverAddress}/api/v1/nodes "${secrets}/ca.pem ${secrets}/kubelet.pem ${secrets}/kubelet-key.pem ${secrets}/kubelet-client.pem ${secrets}/kubelet-client-key.pem"
        '' else ""}
      '') + ''
        exit 0
      '';
    in
    derivation {
      name = "nixos-system-k8s-${if k3s then "k3s" else "nixos"}-${version}";
      system = builtins.currentSystem;
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      inherit module switch etcdStandin apiserverStandin kubeletStandin k3sCommand;
      args = [ "-c" ''
        mkdir -p $out/bin $out/libexec
        printf '%s' "$module" > $out/prov-kubernetes.nix
        printf '%s' "$switch" | sed "s|@out@|$out|" > $out/bin/switch-to-configuration
        printf '%s' "$etcdStandin" > $out/libexec/etcd-standin
        printf '%s' "$apiserverStandin" > $out/libexec/apiserver-standin
        printf '%s' "$kubeletStandin" > $out/libexec/kubelet-standin
        printf '%s' "$k3sCommand" > $out/libexec/k3s
        chmod +x $out/bin/* $out/libexec/*
        echo "k8s stand-in ${version}" > $out/nixos-version
      '' ];
    };
in
{
  inherit mkNode;
  node = mkNode { };
  nodeWithoutReadyz = mkNode { withholdReadyz = true; };
}
