#!/usr/bin/env bash
# Tear down what up.sh built: the clusters, the routes, the registry.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for c in "${CLUSTERS[@]}"; do
  if kind get clusters 2>/dev/null | grep -qx "$c"; then
    sudo ip route del "$(field "$c" serviceSubnet)" 2>/dev/null || true
    sudo ip route del "$(field "$c" podSubnet)" 2>/dev/null || true
    kind delete cluster --name "$c"
  fi
done
if [ -f "$STATE/registry.pid" ]; then
  kill "$(cat "$STATE/registry.pid")" 2>/dev/null || true
  rm -f "$STATE/registry.pid"
fi
echo "Down. The registry's data stays in $STATE (delete it to start afresh)."
