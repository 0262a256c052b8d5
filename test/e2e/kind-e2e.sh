#!/usr/bin/env bash
# kind-e2e.sh: tekton-cache's StepActions on a real Tekton, in a kind cluster
# with a local registry. For users' machines and CI runners with Docker.
#
# IT CANNOT RUN ON THE PROJECT'S BUILD MACHINES: they have no Docker engine
# and no Kubernetes. There, test/tekton covers the same ground offline
# (Tekton's own validation, StepAction resolution and substitution, the
# steps' scripts run against a real registry, the ko image); this script is
# the check that a real cluster agrees.
#
# What it does:
#   1. starts a registry container (kind-registry) and a kind cluster that
#      pulls from it as localhost:$REG_PORT (kind's local registry recipe);
#   2. installs Tekton Pipelines $TEKTON_VERSION and waits for it;
#   3. builds the cache image with ko, pushes it to that registry, and
#      applies the release YAML (kustomize build tekton | ko resolve), image
#      pinned by digest;
#   4. runs examples/go/pipeline-go.yaml twice with the cache in the registry
#      (oci://kind-registry:5000/...), and examples/pvc/pipeline-go-pvc.yaml
#      twice with the cache on a PVC (file://): the first run of each must
#      report cache-fetched=false, the second cache-fetched=true;
#   5. deletes the cluster and the registry (KEEP=1 keeps them).
#
# Needs: docker, kind, kubectl, ko, kustomize (hack/install-tekton-tools.sh
# installs the last two), and internet access (Tekton's release, the base
# image, the example's git repository and golang image).
#
# Usage: test/e2e/kind-e2e.sh        (from anywhere in the repository)
# Env:   CLUSTER (tekton-cache-e2e), REG_PORT (5001), TEKTON_VERSION (v1.15.0),
#        NAMESPACE (tekton-cache-e2e), KEEP (0), TIMEOUT (1200 seconds per run)
set -euo pipefail

CLUSTER=${CLUSTER:-tekton-cache-e2e}
REG_NAME=kind-registry
REG_PORT=${REG_PORT:-5001}
TEKTON_VERSION=${TEKTON_VERSION:-v1.15.0}
NAMESPACE=${NAMESPACE:-tekton-cache-e2e}
KEEP=${KEEP:-0}
TIMEOUT=${TIMEOUT:-1200}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
export PATH="$(go env GOPATH)/bin:$PATH"

log() { printf '\n=== %s\n' "$*" >&2; }
die() { printf 'kind-e2e: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl ko kustomize; do
  command -v "$tool" >/dev/null || die "$tool is not installed (ko, kustomize: hack/install-tekton-tools.sh)"
done
docker info >/dev/null 2>&1 || die "no Docker engine reachable: this script needs one (see the header)"

cleanup() {
  rm -rf "$WORK"
  if [ "$KEEP" = 1 ]; then
    log "KEEP=1: cluster $CLUSTER and container $REG_NAME left running"
    return
  fi
  log "cleaning up"
  kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "registry $REG_NAME on 127.0.0.1:$REG_PORT"
if [ "$(docker inspect -f '{{.State.Running}}' "$REG_NAME" 2>/dev/null || true)" != true ]; then
  docker run -d --restart=always -p "127.0.0.1:${REG_PORT}:5000" --network bridge --name "$REG_NAME" registry:3 >/dev/null
fi

log "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  cat > "$WORK/kind.yaml" <<KIND
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
KIND
  kind create cluster --name "$CLUSTER" --config "$WORK/kind.yaml" --wait 120s
fi
# Nodes pull localhost:$REG_PORT from the registry container.
for node in $(kind get nodes --name "$CLUSTER"); do
  docker exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:${REG_PORT}"
  printf '[host."http://%s:5000"]\n' "$REG_NAME" |
    docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/localhost:${REG_PORT}/hosts.toml"
done
if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REG_NAME")" = null ]; then
  docker network connect kind "$REG_NAME"
fi
kubectl apply -f - <<CM
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:${REG_PORT}"
CM

log "Tekton Pipelines $TEKTON_VERSION"
kubectl apply -f "https://infra.tekton.dev/tekton-releases/pipeline/previous/${TEKTON_VERSION}/release.yaml"
kubectl -n tekton-pipelines wait --for=condition=Available deployment --all --timeout=300s
kubectl -n tekton-pipelines-resolvers wait --for=condition=Available deployment --all --timeout=300s

log "image and release YAML (ko, pinned by digest)"
cd "$ROOT"
export KO_DOCKER_REPO="localhost:${REG_PORT}/tekton-cache"
sh hack/release.sh "$WORK"   # cache-fetch.yaml, cache-upload.yaml, release.yaml
grep -q "image: localhost:${REG_PORT}/tekton-cache/cache@sha256:" "$WORK/release.yaml" ||
  die "the release YAML does not pin the image by digest"

kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" apply -f "$WORK/release.yaml"
kubectl -n "$NAMESPACE" apply -f examples/go/pipeline-go.yaml -f examples/pvc/pipeline-go-pvc.yaml -f examples/pvc/pvc.yaml

# wait_done NAME: polls the Succeeded condition until True (0) or False, or
# TIMEOUT seconds pass (1). kubectl wait would not notice a failure.
wait_done() {
  local status deadline=$((SECONDS + TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    status=$(kubectl -n "$NAMESPACE" get "$1" -o jsonpath='{.status.conditions[?(@.type=="Succeeded")].status}')
    case "$status" in
      True) return 0 ;;
      False) return 1 ;;
    esac
    sleep 5
  done
  return 1
}

# run_pipeline FILE WANT: creates the PipelineRun of FILE, waits for it, and
# checks its cache-fetched result (when the Pipeline has one) is WANT.
run_pipeline() {
  local file=$1 want=$2 name fetched
  name=$(kubectl -n "$NAMESPACE" create -f "$file" -o name)
  log "$name (want cache-fetched=$want)"
  if ! wait_done "$name"; then
    kubectl -n "$NAMESPACE" get "$name" -o yaml >&2
    kubectl -n "$NAMESPACE" get pods -l "tekton.dev/pipelineRun=${name#*/}" -o name |
      xargs -r -n1 kubectl -n "$NAMESPACE" logs --all-containers --prefix >&2 || true
    die "$name did not succeed"
  fi
  fetched=$(kubectl -n "$NAMESPACE" get "$name" -o jsonpath='{.status.results[?(@.name=="cache-fetched")].value}')
  if [ -n "$want" ] && [ "$fetched" != "$want" ]; then
    kubectl -n "$NAMESPACE" get pods -l "tekton.dev/pipelineRun=${name#*/}" -o name |
      xargs -r -n1 kubectl -n "$NAMESPACE" logs -c step-cache-fetch >&2 || true
    die "$name: cache-fetched=$fetched, want $want"
  fi
}

# The PipelineRun of examples/go points at kind-registry:5000 in this namespace.
sed "s|kind-registry:5000/\$(context.pipelineRun.namespace)|kind-registry:5000/${NAMESPACE}|" \
  examples/go/pipelinerun-go.yaml > "$WORK/pipelinerun-go.yaml"
run_pipeline "$WORK/pipelinerun-go.yaml" false
run_pipeline "$WORK/pipelinerun-go.yaml" true

# The PVC variant has no pipeline results: the runs succeeding and the logs
# of the second one saying "cache hit" is the check.
run_pipeline examples/pvc/pipelinerun-go-pvc.yaml ""
run_pipeline examples/pvc/pipelinerun-go-pvc.yaml ""
last=$(kubectl -n "$NAMESPACE" get pipelinerun --sort-by=.metadata.creationTimestamp -o name | tail -1)
kubectl -n "$NAMESPACE" logs -l "tekton.dev/pipelineRun=${last#*/}" -c step-cache-fetch | grep -q "cache hit" ||
  die "$last: the PVC variant's second run did not hit its cache"

log "PASS: the StepActions restore and save caches on Tekton $TEKTON_VERSION"
