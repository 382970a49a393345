#!/usr/bin/env bash
# End-to-end check of Laneway on a real kind cluster (`make kind-e2e`), for machines with Docker.
#
# Creates a two-node cluster from kind-config.yaml, builds the image and loads it into the nodes,
# installs the chart, applies examples/, runs one simulated provider (`laneway simulate-provider`)
# per ModelLane and points the lanes at them, then starts a demo pod labelled
# routing.laneway.dev/policy=support-bot and checks that the webhook injected the router sidecar
# and that a chat completion through it succeeds. On failure it prints the operator's logs and
# the namespaces' events. The cluster is deleted at the end unless KEEP=1.
#
# Settings (environment): CLUSTER (default laneway-e2e), KEEP=1 (keep the cluster),
# KIND_NODE_IMAGE (override kind-config.yaml's node image), IMAGE (default laneway:e2e),
# TIMEOUT (default 300s, for each wait).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

CLUSTER="${CLUSTER:-laneway-e2e}"
IMAGE="${IMAGE:-laneway:e2e}"
TIMEOUT="${TIMEOUT:-300s}"
KEEP="${KEEP:-0}"
RELEASE=laneway
SYSTEM_NS=laneway-system
POLICY=support-bot
SIM_PORT=8000

log() { echo "kind-e2e: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

require_tools() {
  local missing=0 tool
  for tool in docker kind helm kubectl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      log "'$tool' is not on PATH; install it first (docker: https://docs.docker.com/engine/install/,"
      log "  kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation, helm: https://helm.sh/docs/intro/install/,"
      log "  kubectl: https://kubernetes.io/docs/tasks/tools/)"
      missing=1
    fi
  done
  [ "$missing" = 0 ] || exit 1
  docker info >/dev/null 2>&1 \
    || die "the docker command cannot reach a Docker engine; start Docker (or fix DOCKER_HOST) and retry"
}

# Prints what a failing run needs: the operator's logs and both namespaces' events and pods.
dump_diagnostics() {
  local ns
  log "--- operator logs ---"
  kubectl -n "$SYSTEM_NS" logs "deployment/$RELEASE" --all-containers --tail=300 || true
  for ns in "$SYSTEM_NS" "${APP_NS:-}"; do
    [ -n "$ns" ] || continue
    log "--- pods in $ns ---"
    kubectl -n "$ns" get pods -o wide || true
    log "--- events in $ns ---"
    kubectl -n "$ns" get events --sort-by=.lastTimestamp || true
  done
  if [ -n "${APP_NS:-}" ]; then
    log "--- demo pod ---"
    kubectl -n "$APP_NS" describe pod demo || true
    kubectl -n "$APP_NS" logs demo --all-containers --tail=100 || true
    log "--- lanes and policies ---"
    kubectl -n "$APP_NS" get lane,rpol -o wide || true
  fi
}

on_exit() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    dump_diagnostics
  fi
  if [ "$KEEP" = 1 ]; then
    log "keeping cluster '$CLUSTER' (KEEP=1); delete it with: kind delete cluster --name $CLUSTER"
  else
    log "deleting cluster '$CLUSTER'"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}

create_cluster() {
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "reusing existing cluster '$CLUSTER'"
  else
    local image_args=()
    if [ -n "${KIND_NODE_IMAGE:-}" ]; then
      image_args=(--image "$KIND_NODE_IMAGE")
    fi
    log "creating cluster '$CLUSTER'"
    kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait "$TIMEOUT" "${image_args[@]}"
  fi
  kubectl config use-context "kind-$CLUSTER" >/dev/null
}

build_and_load_image() {
  log "building $IMAGE"
  docker build -t "$IMAGE" -f Dockerfile .
  log "loading $IMAGE into the cluster's nodes"
  kind load docker-image "$IMAGE" --name "$CLUSTER"
}

install_chart() {
  log "installing the chart"
  helm upgrade --install "$RELEASE" helm/laneway \
    --namespace "$SYSTEM_NS" --create-namespace \
    --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
    --set image.pullPolicy=Never \
    --wait --timeout "$TIMEOUT"
  kubectl -n "$SYSTEM_NS" rollout status "deployment/$RELEASE" --timeout "$TIMEOUT"
}

# Namespace of the example policy, read back from the cluster after examples/ is applied.
policy_namespace() {
  kubectl get routingpolicies.routing.laneway.dev -A \
    -o jsonpath="{range .items[?(@.metadata.name=='$POLICY')]}{.metadata.namespace}{end}"
}

# One Deployment and Service per ModelLane running `laneway simulate-provider` with the lane's
# API flavour, and the lane's baseURL patched to point at it.
start_simulated_providers() {
  local lane type model sim
  while read -r lane type model; do
    [ -n "$lane" ] || continue
    sim="sim-$lane"
    log "simulated provider $sim for lane $lane ($type, $model)"
    kubectl -n "$APP_NS" apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $sim
  labels: {app.kubernetes.io/name: $sim, app.kubernetes.io/part-of: laneway-e2e}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: $sim}
  template:
    metadata:
      labels: {app.kubernetes.io/name: $sim, app.kubernetes.io/part-of: laneway-e2e}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: provider
          image: $IMAGE
          imagePullPolicy: Never
          args: [simulate-provider, --host, 0.0.0.0, --port, "$SIM_PORT", --model, "$model", --api, "$type"]
          ports: [{name: http, containerPort: $SIM_PORT}]
          readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata:
  name: $sim
spec:
  selector: {app.kubernetes.io/name: $sim}
  ports: [{name: http, port: $SIM_PORT, targetPort: http}]
EOF
    kubectl -n "$APP_NS" patch modellane "$lane" --type merge \
      -p "{\"spec\":{\"provider\":{\"baseURL\":\"http://$sim.$APP_NS.svc:$SIM_PORT/v1\"}}}"
  done < <(kubectl -n "$APP_NS" get modellanes.routing.laneway.dev \
    -o jsonpath='{range .items[*]}{.metadata.name} {.spec.provider.type} {.spec.provider.model}{"\n"}{end}')
  kubectl -n "$APP_NS" wait deployment -l app.kubernetes.io/part-of=laneway-e2e \
    --for=condition=Available --timeout "$TIMEOUT"
}

wait_for_policy() {
  log "waiting for RoutingPolicy $APP_NS/$POLICY to be Ready"
  kubectl -n "$APP_NS" wait "routingpolicy/$POLICY" --for=condition=Ready --timeout "$TIMEOUT"
}

# The demo app: an idle Python process in the Laneway image, labelled like the policy selects.
start_demo_pod() {
  local app_label
  app_label="$(kubectl -n "$APP_NS" get routingpolicy "$POLICY" -o jsonpath='{.spec.selector.matchLabels.app}')"
  log "starting demo pod (app=${app_label:-none})"
  kubectl -n "$APP_NS" delete pod demo --ignore-not-found --wait=true >/dev/null
  kubectl -n "$APP_NS" apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: demo
  labels:
    app: "${app_label:-$POLICY}"
    routing.laneway.dev/policy: $POLICY
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: app
      image: $IMAGE
      imagePullPolicy: Never
      command: [python, -c, "import time; time.sleep(10**9)"]
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
EOF
  kubectl -n "$APP_NS" wait pod demo --for=condition=Ready --timeout "$TIMEOUT"
}

check_sidecar_injected() {
  local names
  names="$(kubectl -n "$APP_NS" get pod demo \
    -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}')"
  log "demo pod containers: $names"
  # The app container is "app"; anything else was added by the webhook.
  tr ' ' '\n' <<<"$names" | grep -qvx -e app -e '' \
    || die "the webhook did not inject the router sidecar into pod $APP_NS/demo"
}

# One chat completion through the sidecar on 127.0.0.1:4000, from inside the app container.
check_request_through_sidecar() {
  log "sending a chat completion through the sidecar"
  kubectl -n "$APP_NS" exec -i demo -c app -- python - <<'EOF'
import json
import sys
import urllib.request

body = json.dumps({
    "model": "auto",
    "messages": [{"role": "user", "content": "Where can I change my billing address?"}],
}).encode()
request = urllib.request.Request(
    "http://127.0.0.1:4000/v1/chat/completions",
    data=body,
    headers={"content-type": "application/json"},
)
with urllib.request.urlopen(request, timeout=30) as response:
    answer = json.load(response)
    route = response.headers.get("x-laneway-route")
    lane = response.headers.get("x-laneway-lane")
content = answer["choices"][0]["message"]["content"]
if not route or not lane or not content:
    sys.exit(f"incomplete answer: route={route!r} lane={lane!r} content={content!r}")
print(f"answered by route {route}, lane {lane}: {content[:60]!r}")
EOF
}

main() {
  require_tools
  trap on_exit EXIT
  create_cluster
  build_and_load_image
  install_chart
  log "applying examples/"
  kubectl apply -f examples/
  APP_NS="$(policy_namespace)"
  [ -n "$APP_NS" ] || die "examples/ has no RoutingPolicy named $POLICY"
  start_simulated_providers
  wait_for_policy
  start_demo_pod
  check_sidecar_injected
  check_request_through_sidecar
  log "PASSED"
}

main "$@"
