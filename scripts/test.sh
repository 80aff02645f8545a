#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the tools the tests need
# (moto, the AWS CLI), checks formatting and lints, runs every test with
# cargo-nextest (integration tests start real moto servers on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/setup.sh)"
export MOTO_SERVER="$(command -v moto_server)"

nix-instantiate --parse flake.nix >/dev/null
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast "$@"
cargo test --workspace --doc --locked
