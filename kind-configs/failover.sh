#!/usr/bin/env bash
# The failover test on the kind federation up.sh built: echo in every
# cluster, a client of east1 (on this machine, through east1's service
# range), east1's pods down and back. Extra flags go to fedctl failover-test.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

args=()
for c in "${CLUSTERS[@]}"; do args+=(--cluster "$c=kind-$c"); done
exec "$FEDCTL" failover-test --kubeconfig "${KUBECONFIG:-$HOME/.kube/config}" "${args[@]}" \
  --client east1 --image "$IMAGE" --report "$STATE/failover-report.json" "$@"
