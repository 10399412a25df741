#!/usr/bin/env bash
# Runs the IPFS HTTP gateway conformance suite (github.com/ipfs/gateway-conformance) against a
# fresh node started from the given binary (default: target/debug/af), as Kubo runs it:
#  - the suite's source is taken from ../shared/vendor/gateway-conformance when it is there (the
#    Go module proxy here does not serve it), else from the proxy by its module path; a working
#    copy is kept in target/gateway-conformance (its `test` command is `go test ./tests` there);
#  - its fixtures are imported through the RPC: every CAR with `dag/import` (pinned, so public;
#    a CAR that lacks blocks on purpose is pinned directly), every IPNS record with `routing/put`;
#    its DNSLink names are TXT records served by a local dnsmasq the node asks (--dns-resolver);
#  - the specs the node implements are run, the subdomain ones against --gateway-domain example.com.
# Prints "gateway conformance: N passed, N failed, N skipped" (leaf tests) and exits non-zero on
# any failure. GATEWAY_CONFORMANCE_KEEP=DIR keeps the report and the node's log.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/debug/af}")
export GOBIN=${GOBIN:-$HOME/go/bin}
export PATH="$GOBIN:$PATH:/usr/sbin:/sbin"
MODULE=github.com/ipfs/gateway-conformance
VERSION=v0.13.1
SPECS=trustless-gateway,path-gateway,path-range-gateway,trustless-ipns-gateway,path-ipns-gateway,dnslink-gateway,subdomain-gateway
SRC=target/gateway-conformance

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The suite's source, copied once (and again when the given copy changed): from
# AF_GATEWAY_CONFORMANCE_SRC, else ../shared/vendor/gateway-conformance, else the Go module proxy.
VENDORED=${AF_GATEWAY_CONFORMANCE_SRC:-../shared/vendor/gateway-conformance}
if [ -d "$VENDORED" ]; then
  stamp=$(find "$VENDORED" -type f -printf '%P %s %T@\n' | sort | sha256sum)
  if [ ! -f "$SRC/.af-stamp" ] || [ "$(cat "$SRC/.af-stamp")" != "$stamp" ]; then
    rm -rf "$SRC" && mkdir -p "$SRC"
    cp -r "$VENDORED/." "$SRC"
    chmod -R u+w "$SRC"
    echo "$stamp" > "$SRC/.af-stamp"
  fi
elif [ ! -f "$SRC/go.mod" ]; then
  dir=$(scripts/go-module-dir.sh "$MODULE@$VERSION" "the IPFS gateway conformance suite" \
    "put its source at ../shared/vendor/gateway-conformance, or name a copy with AF_GATEWAY_CONFORMANCE_SRC=DIR, or set GOPROXY to a proxy that serves it") || exit 1
  rm -rf "$SRC" && mkdir -p "$SRC" && cp -r "$dir/." "$SRC" && chmod -R u+w "$SRC"
fi
(cd "$SRC" && go build -o gateway-conformance ./cmd/gateway-conformance)
rm -rf "$SRC/fixtures.out"
(cd "$SRC" && ./gateway-conformance extract-fixtures --directory fixtures.out --merged=false >/dev/null)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
dns_port=$(free_port)
mapfile -t txt < <(python3 -c "
import json
for k, v in json.load(open('$SRC/fixtures.out/dnslinks.json'))['domains'].items():
    print('--txt-record=_dnslink.%s,dnslink=%s' % (k, v))")
dnsmasq --keep-in-foreground --port="$dns_port" --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
  --pid-file="$work/dnsmasq.pid" "${txt[@]}" >"$work/dnsmasq.log" 2>&1 &
pids+=($!)

gw_port=$(free_port); rpc_port=$(free_port)
AF_LOG=warn "$BIN" registry serve --auth none --offline --api 127.0.0.1:0 --metrics 127.0.0.1:0 --swarm /ip4/127.0.0.1/tcp/0 \
  --gateway "127.0.0.1:$gw_port" --rpc "127.0.0.1:$rpc_port" --gateway-domain example.com --dns-resolver "127.0.0.1:$dns_port" \
  --trusted-proxy 127.0.0.1 `# the suite is the proxy in front: its X-Forwarded-Host/-Proto count` \
  --data-dir "$work/data" >"$work/node.log" 2>&1 &
pids+=($!)
rpc="http://127.0.0.1:$rpc_port/api/v0"
for _ in $(seq 100); do curl -sf -X POST "$rpc/id" >/dev/null && break; sleep 0.1; done

for car in "$SRC"/fixtures.out/*.car; do
  out=$(curl -sS -X POST -F "file=@$car" "$rpc/dag/import?pin-roots=true")
  echo "$out" | python3 -c '
import json, sys
for line in sys.stdin:
    root = json.loads(line)["Root"]
    if root["PinErrorMsg"]:
        print(root["Cid"]["/"])' | while read -r root; do
    # A fixture that lacks blocks on purpose: its root pinned alone, so what it has is public.
    curl -sSf -X POST "$rpc/pin/add?arg=$root&recursive=false" >/dev/null
  done
done
for rec in "$SRC"/fixtures.out/*.ipns-record; do
  key=$(basename "$rec"); key=${key%%_*}; key=${key%.ipns-record}
  # Records broken on purpose (bad signatures, V1 only) are refused, as the suite expects.
  curl -sS -X POST -F "file=@$rec" "$rpc/routing/put?arg=/ipns/$key" >/dev/null
done

report=$work/report.json
(cd "$SRC" && ./gateway-conformance test --gateway-url "http://127.0.0.1:$gw_port" --subdomain-url http://example.com \
  --specs "$SPECS" --json "$report" -- -timeout 10m >"$work/suite.log" 2>&1) || true
set +e
python3 - "$report" <<'EOF'
import json, sys
result = {}
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("Test") and e.get("Action") in ("pass", "fail", "skip"):
        result[e["Test"]] = e["Action"]
leaves = {t: a for t, a in result.items() if not any(o.startswith(t + "/") for o in result)}
counts = {a: sum(1 for v in leaves.values() if v == a) for a in ("pass", "fail", "skip")}
for t, a in sorted(leaves.items()):
    if a == "fail":
        print("FAILED:", t)
print("gateway conformance: %d passed, %d failed, %d skipped" % (counts["pass"], counts["fail"], counts["skip"]))
sys.exit(1 if counts["fail"] or not counts["pass"] else 0)
EOF
status=$?
set -e
if [ -n "${GATEWAY_CONFORMANCE_KEEP:-}" ]; then mkdir -p "$GATEWAY_CONFORMANCE_KEEP" && cp "$report" "$work"/*.log "$GATEWAY_CONFORMANCE_KEEP/"; fi
exit $status
