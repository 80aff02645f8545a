# Stand-in NixOS systems, buildable without nixpkgs.
#
# Each "system" is a store path shaped like a NixOS toplevel: it has
# bin/switch-to-configuration and a closure of several store paths. Its
# switch-to-configuration records the goal it ran with (in
# /nix/var/prov-standin/activations on the host) instead of reconfiguring the
# machine. Everything prov does around it is the real protocol: building with
# nix-build, copying the closure over SSH, `nix-env -p
# /nix/var/nix/profiles/system --set`, `switch-to-configuration GOAL`,
# confirmation, rollback.
#
#   nix-build systems.nix -A web          # the quickstart's system
#   nix-build systems.nix -A db
#
# `mkSystem` is exported for tests and benchmarks that need other shapes:
#   name        the host's role, part of the store path name
#   version     changing it makes a new system (new toplevel and payload)
#   sharedPaths number of store paths every system shares (a "base system")
#   payloadKiB  size of the role-specific payload
#   breakSsh    a faulty system: its activation disables SSH logins on a
#               prov local host (authorized_keys moved aside), as a bad
#               sshd configuration would; activating a good system again
#               restores them.
#   failActivation  a faulty system: switch-to-configuration exits 1
#   activationSeconds  how long switch-to-configuration takes
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  };

  # Deterministic filler: `size` KiB of text.
  filler = name: sizeKiB: mk name ''
    mkdir -p $out
    yes "${name}" | head -c ${toString (sizeKiB * 1024)} > $out/data
  '';

  shared = count: sizeKiB:
    builtins.genList (i: filler "base-${toString i}" sizeKiB) count;

  # Finds the host directory of a prov local host from inside it: the source
  # of its private /nix bind mount.
  findHostDir = ''
    hostdir=$(awk '{ dev[NR] = $3; root[NR] = $4; mnt[NR] = $5 }
                   $5 == "/nix" { d = $3; r = $4 }
                   END { for (i = 1; i <= NR; i++) if (dev[i] == d && root[i] == "/") { m = mnt[i]; break }
                         if (m == "/") m = ""; print m r }' /proc/self/mountinfo)
    hostdir=''${hostdir%/nix}
  '';

  mkSystem = { name, version ? "1", sharedPaths ? 4, sharedKiB ? 16, payloadKiB ? 64, breakSsh ? false
             , failActivation ? false, activationSeconds ? 0 }:
    let
      base = shared sharedPaths sharedKiB;
      payload = filler "payload-${name}-${version}" payloadKiB;
    in
    mk "nixos-system-${name}-${version}" ''
      mkdir -p $out/bin
      # Runtime references: the base paths and the payload.
      echo ${toString base} ${payload} > $out/references
      cat > $out/bin/switch-to-configuration <<'EOF'
      #!/bin/sh
      # Stand-in for NixOS's switch-to-configuration: records the goal.
      mkdir -p /nix/var/prov-standin
      echo "$1 @out@" >> /nix/var/prov-standin/activations
      ${findHostDir}
      if [ -n "$hostdir" ] && [ -d "$hostdir" ]; then
        ${if breakSsh then ''
        if [ -e "$hostdir/authorized_keys" ]; then mv "$hostdir/authorized_keys" "$hostdir/authorized_keys.broken-by-standin"; fi
        '' else ''
        if [ -e "$hostdir/authorized_keys.broken-by-standin" ]; then mv "$hostdir/authorized_keys.broken-by-standin" "$hostdir/authorized_keys"; fi
        ''}
      fi
      ${if activationSeconds > 0 then "sleep ${toString activationSeconds}" else ""}
      exit ${if failActivation then "1" else "0"}
      EOF
      sed -i "s|@out@|$out|" $out/bin/switch-to-configuration
      chmod +x $out/bin/switch-to-configuration
      echo "${name} ${version}" > $out/nixos-version
    '';
in
{
  inherit mkSystem;
  web = mkSystem { name = "web"; };
  db = mkSystem { name = "db"; payloadKiB = 128; };
}
