#!/usr/bin/env bash
# Installs, idempotently, every independent client the test suite drives (and mmdebstrap, which
# makes the container image's Debian base):
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

# A tool that cannot be had ends the run with one line: what is missing, why (the tool's last
# line of output), and the ways to provide it.
step_log=$(mktemp)
trap 'rm -f "$step_log"' EXIT
attempt() { # what, how to provide it, command...
  local what=$1 provide=$2; shift 2
  "$@" >"$step_log" 2>&1 || {
    echo "cannot install $what: $(grep -v '^\s*$' "$step_log" | tail -1); $provide" >&2
    exit 1
  }
}

need_apt=()
for pair in skopeo:skopeo podman:podman buildah:buildah mmdebstrap:mmdebstrap umoci:umoci containerd:containerd \
            ctr:containerd docker-registry:docker-registry wrk:wrk jq:jq tini:tini prometheus:prometheus promtool:prometheus chromium:chromium dnsmasq:dnsmasq-base faketime:faketime \
            ip:iproute2 tc:iproute2 curl:curl python3:python3; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# psql alone (postgresql-client) is not the server.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  attempt "the Debian packages ${need_apt[*]}" "install them with apt-get, or reach a Debian mirror" apt-get update -qq
  attempt "the Debian packages ${need_apt[*]}" "install them with apt-get, or reach a Debian mirror" \
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" fuse-overlayfs uidmap
fi

go_tool() { # name module@version
  if [ ! -x "$GOBIN/$1" ]; then
    echo "building $2"
    attempt "$1 ($2)" "set GOPROXY to a proxy that serves it, or put a $1 binary at $GOBIN/$1" go install "$2"
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
  attempt "Kubo ${KUBO_VERSION}" "put an ipfs binary of ${KUBO_VERSION} at $GOBIN/ipfs" bash -c "cd '$kubo_dir' && go build -o '$GOBIN/ipfs' ./cmd/ipfs"
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
  attempt "IPFS Cluster ${CLUSTER_VERSION}" "put ipfs-cluster-service and ipfs-cluster-ctl ${CLUSTER_VERSION} in $GOBIN" \
    bash -c "cd '$cluster_src' && go build -o '$GOBIN' ./cmd/ipfs-cluster-service ./cmd/ipfs-cluster-ctl"
fi

# The JavaScript peers the tests drive (Helia's UnixFS importer and verified-fetch, @ipld/car,
# Node 22 for verified-fetch), pinned by tests/interop/package-lock.json; reinstalled whenever the
# lockfile changed since the last install.
if ! cmp -s tests/interop/package-lock.json tests/interop/node_modules/.af-installed-lock.json; then
  echo "installing npm packages in tests/interop"
  attempt "the npm packages of tests/interop" "set npm's registry to one that serves them" \
    bash -c "cd tests/interop && npm ci --silent && cp package-lock.json node_modules/.af-installed-lock.json"
fi

# Akash's SDL parser, apart: it installs only without its packages' scripts (a keyring module
# it pulls in does not build here).
if ! cmp -s tests/akash/package-lock.json tests/akash/node_modules/.af-installed-lock.json; then
  echo "installing npm packages in tests/akash"
  attempt "the npm packages of tests/akash" "set npm's registry to one that serves them" \
    bash -c "cd tests/akash && npm ci --ignore-scripts --silent && cp package-lock.json node_modules/.af-installed-lock.json"
fi

python3 -c 'import oras' 2>/dev/null || { echo "installing oras (PyPI)"; attempt "oras (PyPI)" "set pip's index to one that serves it" pip install -q 'oras>=0.2,<0.3'; }
echo "test dependencies ready"

# cargo fuzz (its targets build with the nightly toolchain these machines carry); cargo deny is
# built by scripts/test.sh in the background.
export PATH="$HOME/.cargo/bin:$PATH"
# rustfmt and clippy: the formatting and lint steps of scripts/test.sh.
for c in rustfmt clippy; do rustup component list --installed | grep -q "^$c" || attempt "the Rust component $c" "install it with rustup component add $c" rustup component add "$c"; done
rustup toolchain list | grep -q "^nightly" || attempt "the nightly Rust toolchain (the fuzz targets)" "install it with rustup toolchain install nightly" rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || attempt "cargo-fuzz 0.13.2" "reach crates.io, or put cargo-fuzz in ~/.cargo/bin" cargo install --locked cargo-fuzz@0.13.2
