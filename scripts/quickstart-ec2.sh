#!/usr/bin/env bash
# The EC2 quickstart, no cloud account needed: installs the
# tools, starts a local EC2 (moto) on 127.0.0.1, builds prov, and applies
# examples/ec2.toml (a key pair, a security group and three instances).
# Then lists the instances through the AWS CLI, with prov's tags.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/setup.sh test)"
endpoint="$(scripts/moto.sh)"

export AWS_ENDPOINT_URL="$endpoint"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_DEFAULT_REGION="$AWS_REGION"

cargo build --quiet --bin prov
prov=target/debug/prov
if [ -n "${CARGO_TARGET_DIR:-}" ]; then prov="$CARGO_TARGET_DIR/debug/prov"; fi

"$prov" -f examples/ec2.toml apply --auto-approve
"$prov" -f examples/ec2.toml plan --detailed-exitcode

echo
echo "Instances in the local EC2 at $endpoint:"
aws --endpoint-url "$endpoint" ec2 describe-instances \
  --filters Name=tag:prov:deployment,Values=quickstart-ec2 Name=instance-state-name,Values=running \
  --query 'Reservations[].Instances[].[InstanceId,InstanceType,Tags[?Key==`prov:address`]|[0].Value]' \
  --output text
