#!/usr/bin/env bash
# Installs, idempotently, every independent client the test suite drives:
# Debian's registry clients, the OCI conformance suite and Go clients built from the Go module
# proxy, and oras from PyPI. Safe to run again; skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
REGCLIENT_VERSION=v0.11.7
CRANE_VERSION=v0.22.1
KUBO_VERSION=v0.42.0
export GOBIN="${GOBIN:-$HOME/go/bin}"
export PATH="$GOBIN:$PATH:/usr/sbin:/sbin"

need_apt=()
for pair in skopeo:skopeo podman:podman buildah:buildah umoci:umoci containerd:containerd \
            ctr:containerd docker-registry:docker-registry wrk:wrk jq:jq tini:tini prometheus:prometheus promtool:prometheus chromium:chromium dnsmasq:dnsmasq-base faketime:faketime; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# psql alone (postgresql-client) is not the server.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" fuse-overlayfs uidmap >/dev/null
fi

go_tool() { # name module@version
  if [ ! -x "$GOBIN/$1" ]; then
    echo "building $2"
    go install "$2"
  fi
}
go_tool conformance "github.com/opencontainers/distribution-spec/conformance@${CONFORMANCE_VERSION}"
go_tool regctl "github.com/regclient/regclient/cmd/regctl@${REGCLIENT_VERSION}"
go_tool crane "github.com/google/go-containerregistry/cmd/crane@${CRANE_VERSION}"
# Kubo, the reference IPFS implementation, as an independent source of UnixFS CIDs. Its go.mod has
# exclude directives, which `go install pkg@version` refuses, so it is built inside its own module
# as downloaded from the proxy. (v0.43.1 replaces go-libp2p with a fork the proxy does not serve.)
if [ ! -x "$GOBIN/ipfs" ]; then
  echo "building github.com/ipfs/kubo@${KUBO_VERSION}"
  kubo_dir=$(scripts/go-module-dir.sh "github.com/ipfs/kubo@${KUBO_VERSION}" "Kubo" "set GOPROXY to a proxy that serves it, or put an ipfs binary of ${KUBO_VERSION} at $GOBIN/ipfs") || exit 1
  (cd "$kubo_dir" && go build -o "$GOBIN/ipfs" ./cmd/ipfs)
fi

# IPFS Cluster, which drives our nodes through the Kubo RPC in tests/cluster.rs. The Go module
# proxy reachable here does not serve it: it is built from ../shared/vendor/ipfs-cluster (the
# upstream source at v1.1.6) when that is there, else from the proxy by its module path. Built
# once (about 6 minutes on 2 cores) into $GOBIN, rebuilt when the version there differs.
CLUSTER_VERSION=1.1.6
if ! "$GOBIN/ipfs-cluster-service" --version 2>/dev/null | grep -q "$CLUSTER_VERSION" || [ ! -x "$GOBIN/ipfs-cluster-ctl" ]; then
  if [ -d ../shared/vendor/ipfs-cluster ]; then
    echo "building IPFS Cluster ${CLUSTER_VERSION} from ../shared/vendor/ipfs-cluster"
    cluster_src=$(mktemp -d)
    cp -r ../shared/vendor/ipfs-cluster/. "$cluster_src"
  else
    echo "building github.com/ipfs-cluster/ipfs-cluster@v${CLUSTER_VERSION} from the Go module proxy"
    cluster_src=$(scripts/go-module-dir.sh "github.com/ipfs-cluster/ipfs-cluster@v${CLUSTER_VERSION}" "IPFS Cluster" \
      "put its source at ../shared/vendor/ipfs-cluster, or set GOPROXY to a proxy that serves it") || exit 1
  fi
  (cd "$cluster_src" && go build -o "$GOBIN" ./cmd/ipfs-cluster-service ./cmd/ipfs-cluster-ctl)
fi

# The JavaScript peers the tests drive (Helia's UnixFS importer and verified-fetch, @ipld/car,
# Node 22 for verified-fetch), pinned by tests/interop/package-lock.json; reinstalled whenever the
# lockfile changed since the last install.
if ! cmp -s tests/interop/package-lock.json tests/interop/node_modules/.af-installed-lock.json; then
  echo "installing npm packages in tests/interop"
  (cd tests/interop && npm ci --silent && cp package-lock.json node_modules/.af-installed-lock.json)
fi

# Akash's SDL parser, apart: it installs only without its packages' scripts (a keyring module
# it pulls in does not build here).
if ! cmp -s tests/akash/package-lock.json tests/akash/node_modules/.af-installed-lock.json; then
  echo "installing npm packages in tests/akash"
  (cd tests/akash && npm ci --ignore-scripts --silent && cp package-lock.json node_modules/.af-installed-lock.json)
fi

python3 -c 'import oras' 2>/dev/null || { echo "installing oras (PyPI)"; pip install -q 'oras>=0.2,<0.3'; }
echo "test dependencies ready"

# cargo fuzz (its targets build with the nightly toolchain these machines carry); cargo deny is
# built by scripts/test.sh in the background.
export PATH="$HOME/.cargo/bin:$PATH"
# rustfmt and clippy: the formatting and lint steps of scripts/test.sh.
for c in rustfmt clippy; do rustup component list --installed | grep -q "^$c" || rustup component add "$c"; done
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
