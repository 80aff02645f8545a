{
  description = "prov: a declarative provisioner for NixOS hosts (EC2, libvirt, VirtualBox, local containers)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);

      prov = pkgs: pkgs.rustPlatform.buildRustPackage {
        pname = "prov";
        version = cargoToml.workspace.package.version;
        src = pkgs.lib.cleanSourceWith {
          src = ./.;
          filter = path: type:
            let base = baseNameOf path;
            in !(builtins.elem base [ "target" ".prov" ".git" ]);
        };
        cargoLock.lockFile = ./Cargo.lock;
        cargoBuildFlags = [ "--bin" "prov" ];
        # Unit tests run in the build; the integration suite needs real peers
        # (moto, sshd, nix daemons) and runs through scripts/test.sh instead.
        cargoTestFlags = [ "--workspace" "--lib" ];
        # The libvirt provider (cargo feature `libvirt`, on by default) links
        # libvirt; its unit tests use libvirt's built-in test:///default
        # driver and read the seeds prov writes with isoinfo, xorriso, blkid.
        nativeBuildInputs = [ pkgs.pkg-config pkgs.installShellFiles ];
        buildInputs = [ pkgs.libvirt ];
        # Completions and manual pages come from prov itself (clap), so
        # they need a prov that runs on the build machine.
        postInstall = pkgs.lib.optionalString (pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform) ''
          installShellCompletion --cmd prov \
            --bash <($out/bin/prov completions bash) \
            --zsh <($out/bin/prov completions zsh) \
            --fish <($out/bin/prov completions fish)
          $out/bin/prov man --dir man
          installManPage man/*.1
        '';
        nativeCheckInputs = [ pkgs.cdrkit pkgs.xorriso pkgs.util-linux ];
        PROV_REQUIRE_TEST_TOOLS = "1";
        meta = {
          description = cargoToml.package.description;
          license = pkgs.lib.licenses.asl20;
          mainProgram = "prov";
        };
      };
    in
    {
      packages = forAllSystems (pkgs: {
        prov = prov pkgs;
        default = prov pkgs;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${prov pkgs}/bin/prov";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ (prov pkgs) ];
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            cargo-nextest
            rust-analyzer
            awscli2
            python3Packages.moto
            openssh
            age
            libvirt
            qemu
          ];
          PROV_LOG = "info";
        };
      });

      checks = forAllSystems (pkgs: {
        prov = prov pkgs;
        fmt = pkgs.runCommand "prov-fmt" { nativeBuildInputs = [ pkgs.cargo pkgs.rustfmt ]; } ''
          cd ${./.}
          cargo fmt --all --check
          touch $out
        '';
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
