#!/usr/bin/env bash
# Build the real control-plane binaries the integration tests run (etcd, kube-apiserver,
# kube-controller-manager, kubectl, helm) and promtool (the chart's Prometheus rules) from Go
# modules, into a cache outside the repository.
#
# The cache key covers the Go version, each tools module's go.mod and go.sum, and the link flags,
# so only the first run on a machine pays for the build. promtool has a key of its own and is
# linked into the same directory, so adding or updating it never rebuilds the control plane. Prints the binary directory as its last
# line. Idempotent: a warm run checks each binary's version and returns in about a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/tools"
cache_root="${LANEWAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/laneway}"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
HELM_VERSION=v4.3.2
PROMETHEUS_VERSION=v0.316.0  # the Go module's version of Prometheus 3.16.0

k8s_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37"
etcd_ldflags="-s -w"
helm_ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
prom_ldflags="-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"

if ! command -v go >/dev/null; then
  echo "build.sh: the Go toolchain is required (go 1.26.7 or newer on PATH; promtool's module needs 1.26.7)" >&2
  exit 1
fi

control_plane=(etcd helm k8s)
key="$( { go version; for m in "${control_plane[@]}"; do cat "$tools/$m/go.mod"; done
          for m in "${control_plane[@]}"; do cat "$tools/$m/go.sum"; done
          echo "$k8s_ldflags$etcd_ldflags$helm_ldflags"; } | sha256sum | cut -c1-16)"
bin="$cache_root/controlplane/$key"
prom_key="$( { go version; cat "$tools/prometheus/go.mod" "$tools/prometheus/go.sum"
               echo "$prom_ldflags"; } | sha256sum | cut -c1-16)"
prom_bin="$cache_root/promtool/$prom_key"
mkdir -p "$bin" "$prom_bin"

# One build at a time per cache: concurrent test runs wait here instead of racing.
exec 9>"$bin/.lock"
flock 9

log() { echo "build.sh: $*" >&2; }

build() {  # build MODULE_DIR LDFLAGS PACKAGE... (into $out, default $bin)
  local dir="$1" ldflags="$2" out="${out:-$bin}"; shift 2
  local start=$SECONDS
  log "building $* (first run on this machine; later runs reuse $out)"
  (cd "$tools/$dir" && go build -ldflags "$ldflags" -o "$out/.tmp-$dir/" "$@")
  mv "$out/.tmp-$dir"/* "$out/" && rmdir "$out/.tmp-$dir"
  log "built $dir in $((SECONDS - start))s"
}

have() {  # have BINARY EXPECTED-VERSION-SUBSTRING VERSION-ARGS... (in $out, default $bin)
  local name="$1" want="$2" out="${out:-$bin}"; shift 2
  [ -x "$out/$name" ] && "$out/$name" "$@" 2>/dev/null | grep -q -- "$want"
}

have etcd "${ETCD_VERSION#v}" --version || build etcd "$etcd_ldflags" go.etcd.io/etcd/server/v3
if [ -x "$bin/server" ]; then mv "$bin/server" "$bin/etcd"; fi
have kube-apiserver "$K8S_VERSION" --version && have kubectl "$K8S_VERSION" version --client \
  && have kube-controller-manager "$K8S_VERSION" --version \
  || build k8s "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-apiserver \
       k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
have helm "$HELM_VERSION" version || build helm "$helm_ldflags" helm.sh/helm/v4/cmd/helm
out="$prom_bin" have promtool "$PROMETHEUS_VERSION" --version \
  || out="$prom_bin" build prometheus "$prom_ldflags" github.com/prometheus/prometheus/cmd/promtool
ln -sfn "$prom_bin/promtool" "$bin/promtool"

for b in etcd kube-apiserver kube-controller-manager kubectl helm promtool; do
  [ -x "$bin/$b" ] || { log "missing $bin/$b after the build"; exit 1; }
done
echo "$bin"
