#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the tools the tests need
# (moto, the AWS CLI, libvirt + QEMU and a cached Debian guest image,
# cargo-nextest, cargo-deny), checks formatting, lints and the dependency
# policy (deny.toml), runs every test with cargo-nextest (integration tests
# start real moto servers, sshd hosts and libvirt VMs on 127.0.0.1), then
# every fuzz target briefly (nightly and cargo-fuzz, installed when missing).
# Each step prints its wall time and the total so far (stderr), so a slow
# run says which step took the time.
set -euo pipefail
cd "$(dirname "$0")/.."

suite_start=$SECONDS
# step NAME COMMAND...: runs COMMAND (set -e ends the suite when it fails),
# then prints how long it took.
step() {
  local name="$1" start=$SECONDS
  shift
  "$@"
  printf 'test: %s: %d s (%d s in all)\n' "$name" $((SECONDS - start)) $((SECONDS - suite_start)) >&2
}

start=$SECONDS
eval "$(scripts/setup.sh test)"
printf 'test: set-up: %d s\n' $((SECONDS - start)) >&2
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: installing cargo-nextest" >&2
  step "install cargo-nextest" cargo install --locked --quiet cargo-nextest
fi
if ! cargo deny --version >/dev/null 2>&1; then
  echo "test: installing cargo-deny" >&2
  step "install cargo-deny" cargo install --locked --quiet cargo-deny
fi
# moto with S3's atomic conditional writes (see the script for why).
MOTO_SERVER="$PWD/scripts/lib/moto-server"
export MOTO_SERVER
# libvirtd, virtlogd and the pool `prov-test`; then the guest image (built
# once per machine, about 3 minutes, then cached).
start=$SECONDS
eval "$(scripts/libvirt-setup.sh)"
eval "$(scripts/libvirt-image.sh)"
printf 'test: libvirt and its guest image: %d s\n' $((SECONDS - start)) >&2
# Tests that read prov's output with system tools fail, not skip, without them.
export PROV_REQUIRE_TEST_TOOLS=1

nix-instantiate --parse flake.nix >/dev/null
step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# The build without default features (no AWS SDK, no libvirt) stays clean.
step "clippy without default features" cargo clippy --no-default-features --locked -- -D warnings
# The dependency policy (deny.toml): licenses, duplicates, sources, and
# RustSec advisories. Their database lives on GitHub; where GitHub cannot be
# reached (machines that reach only package registries) the advisories are
# skipped with a notice instead of failing the suite for the network.
deny() {
  if timeout 120 cargo deny --locked fetch db >/dev/null 2>&1; then
    cargo deny --locked --offline check
  else
    echo "test: the RustSec advisory database cannot be fetched from GitHub: advisories NOT checked (licenses, bans and sources are)" >&2
    cargo deny --locked check bans licenses sources
  fi
}
step "cargo deny" deny
# Real VMs under software emulation keep both cores busy: they run on their
# own after everything else, so they cannot slow down tests with short
# timeouts (activation confirmation, locking).
step tests cargo nextest run --workspace --locked --no-fail-fast --no-tests=pass -E 'not test(/^libvirt::/)' "$@"
# Two at a time: four TCG guests at once on two cores miss SSH timeouts.
step "libvirt tests" cargo nextest run --test integration --locked --no-fail-fast --no-tests=pass --test-threads 2 -E 'test(/^libvirt::/)' "$@"
step "doc tests" cargo test --workspace --doc --locked
# Every fuzz target for 30 s (scripts/fuzz.sh; 600 s each before a release).
step fuzz scripts/fuzz.sh "${PROV_FUZZ_SECONDS:-30}"
