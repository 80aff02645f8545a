# The quickstart deployment (examples/quickstart.toml) written in Nix:
#   prov -f examples/quickstart.nix plan
# prov evaluates it with `nix-instantiate --eval --strict --json` into the same
# schema as the TOML spec; the two plan identically.
let
  role = "web";
in
{
  deployment = "quickstart";

  hosts.${role} = {
    target = "local";
    count = 3;
    nix = { file = "systems.nix"; attr = role; };
    goal = "switch";
    tags = { inherit role; };
    health = {
      command = "test -x /nix/var/nix/profiles/system/bin/switch-to-configuration";
      retries = 3;
      interval = 1;
    };
  };

  outputs.addresses = "${role}[*].ssh_host";
}
