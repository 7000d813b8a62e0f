# shellcheck shell=bash
# Shared by up.sh, failover.sh, conformance.sh and down.sh (sourced: the
# variables are theirs to use).
# shellcheck disable=SC2034
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
STATE="${FEDERATION_KIND_STATE:-$ROOT/.kind-federation}"
CLUSTERS=(east1 east2 west)
IMAGE=federation:dev
PORT=8443
FEDCTL="$ROOT/.venv/bin/fedctl"
export FEDERATION_CONFIG="$STATE/registry/admin.json"

field() {  # field CLUSTER KEY: a value from the cluster's kind config
  sed -n "s|^ *$2: *||p" "$HERE/$1.yaml" | head -n1
}

node_ip() {  # the control-plane container's address on the kind network
  docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1-control-plane"
}

gateway_ip() {  # this machine's address on the kind network
  docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' \
    | grep -v : | head -n1
}
