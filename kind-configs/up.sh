#!/usr/bin/env bash
# Build a federation of three kind clusters on one Docker network:
#   east1, east2 (us-east) and west (us-west); flat networking (pod IPs
#   routed between the clusters' nodes), a registry on this machine, the
#   cluster agent deployed in each cluster from deploy/cluster/overlays/flat.
# Needs: docker, kind, kubectl, make (for .venv), and sudo for the routes
# that let this machine reach the clusters' service ranges (failover.sh's
# client runs here).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

make -C "$ROOT" .venv/.installed >/dev/null
mkdir -p "$STATE"

for c in "${CLUSTERS[@]}"; do
  kind get clusters 2>/dev/null | grep -qx "$c" || kind create cluster --config "$HERE/$c.yaml"
done

docker build -q -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" "$ROOT"
for c in "${CLUSTERS[@]}"; do kind load docker-image "$IMAGE" --name "$c"; done

# Flat networking: every node routes every other cluster's pod range to
# that cluster's node; this machine routes each service range likewise.
for c in "${CLUSTERS[@]}"; do
  for other in "${CLUSTERS[@]}"; do
    [ "$c" = "$other" ] && continue
    docker exec "$c-control-plane" ip route replace "$(field "$other" podSubnet)" \
      via "$(node_ip "$other")"
  done
  sudo ip route replace "$(field "$c" serviceSubnet)" via "$(node_ip "$c")"
  sudo ip route replace "$(field "$c" podSubnet)" via "$(node_ip "$c")"
done

GATEWAY="$(gateway_ip)"
if [ ! -f "$STATE/registry.pid" ] || ! kill -0 "$(cat "$STATE/registry.pid")" 2>/dev/null; then
  [ -f "$STATE/key" ] || head -c 32 /dev/urandom | base64 > "$STATE/key"
  "$FEDCTL" registry serve --listen "0.0.0.0:$PORT" --hostname "$GATEWAY" \
    --data-dir "$STATE/registry" --encryption-key-file "$STATE/key" \
    >"$STATE/registry.log" 2>&1 &
  echo $! > "$STATE/registry.pid"
  for _ in $(seq 50); do [ -f "$FEDERATION_CONFIG" ] && break; sleep 0.2; done
fi

for c in "${CLUSTERS[@]}"; do
  region="$(field "$c" topology.kubernetes.io/region)"
  zone="$(field "$c" topology.kubernetes.io/zone)"
  ctx="kind-$c"
  kubectl --context "$ctx" apply -k "$ROOT/deploy/cluster/overlays/flat" >/dev/null
  kubectl --context "$ctx" -n federation-system create configmap federation-agent \
    --from-literal=registry="https://$GATEWAY:$PORT" --dry-run=client -o yaml \
    | kubectl --context "$ctx" apply -f - >/dev/null
  if ! kubectl --context "$ctx" -n federation-system get secret federation-agent-credential \
      >/dev/null 2>&1; then
    "$FEDCTL" cluster remove "$c" --yes >/dev/null 2>&1 || true
    token="$("$FEDCTL" cluster add "$c" --region "$region" --zone "$zone" | tail -n1)"
    kubectl --context "$ctx" -n federation-system create secret generic federation-join-token \
      --from-literal=token="$token" --dry-run=client -o yaml \
      | kubectl --context "$ctx" apply -f - >/dev/null
  fi
  kubectl --context "$ctx" -n federation-system rollout restart deployment/federation-agent
done
for c in "${CLUSTERS[@]}"; do
  kubectl --context "kind-$c" -n federation-system rollout status deployment/federation-agent \
    --timeout=180s
done
"$FEDCTL" status
echo "Federation up. Run kind-configs/failover.sh; tear down with kind-configs/down.sh."
