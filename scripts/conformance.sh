#!/usr/bin/env bash
# Runs the OCI distribution-spec conformance suite against fresh nodes started from the given
# binary (default: target/debug/af), twice:
#  1. every API and data toggle on, against a node started with --sparse-manifests (the suite's
#     "sparse" data expects manifests whose layers or children were never pushed to be accepted);
#  2. every toggle but "sparse", against a node with the default policy, which refuses such
#     manifests with MANIFEST_BLOB_UNKNOWN, and with authentication on: the suite logs in with
#     OCI_USERNAME/OCI_PASSWORD (the administrator the node creates from AF_ADMIN_PASSWORD) and
#     goes through the Docker token flow. Run 1 uses --auth none.
# Prints "conformance: N passed, N failed, N skipped" per run and in total; exits non-zero on any
# failure or skip. CONFORMANCE_KEEP=DIR keeps the reports.
set -euo pipefail
BIN=$(realpath "${1:-target/debug/af}")
GOBIN=${GOBIN:-$HOME/go/bin}
PORT=${CONFORMANCE_PORT:-5055}
pid=
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

for t in PULL PUSH BLOBS_ATOMIC BLOBS_DELETE BLOBS_DIGEST_HEADER BLOBS_MOUNT_ANONYMOUS BLOBS_UPLOAD_CANCEL \
         MANIFESTS_ATOMIC MANIFESTS_DELETE MANIFESTS_DIGEST_HEADER MANIFESTS_TAG_PARAM TAGS_ATOMIC \
         TAGS_DELETE TAGS_LIST REFERRER; do
  export "OCI_API_$t=true"
done
for t in IMAGE INDEX INDEX_LIST ARTIFACT SUBJECT SUBJECT_MISSING ARTIFACT_LIST SUBJECT_LIST DATA_FIELD \
         NONDISTRIBUTABLE CUSTOM_FIELDS NO_LAYERS EMPTY_BLOB SHA512; do
  export "OCI_DATA_$t=true"
done
export OCI_REGISTRY="127.0.0.1:$PORT" OCI_TLS=disabled OCI_REPO1=conformance/repo1 OCI_REPO2=conformance/repo2
export OCI_LOG=error OCI_VERSION=1.1

total_pass=0; total_fail=0; total_skip=0

run_suite() { # label sparse(true|false) node-args...
  local label=$1 sparse=$2; shift 2
  local work; work=$(mktemp -d)
  AF_LOG=warn "$BIN" registry serve --api "127.0.0.1:$PORT" --gateway 127.0.0.1:0 --rpc 127.0.0.1:0 --metrics 127.0.0.1:0 --data-dir "$work/data" "$@" >"$work/node.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    # Any answer will do: with authentication on, /v2/ answers 401.
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v2/")" != 000 ] && break
    sleep 0.1
  done
  local rc=0
  (cd "$work" && OCI_DATA_SPARSE=$sparse OCI_RESULTS_DIR="$work/results" "$GOBIN/conformance" >"$work/suite.log" 2>&1) || rc=$?
  cleanup; pid=
  local junit="$work/results/junit.xml"
  if [ ! -f "$junit" ]; then
    cat "$work/suite.log" "$work/node.log"
    echo "conformance ($label): no junit.xml"; total_fail=$((total_fail + 1)); return
  fi
  local counts; counts=$(python3 - "$junit" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
# The suite's own counts (the root's attributes); the test cases only say which ones.
a = lambda k: int(root.get(k, 0))
failed, skipped = a("failures") + a("errors"), a("skipped")
for tc in root.iter("testcase"):
    st = tc.get("status", "")
    if st in ("failure", "error", "skipped", "disabled"):
        out = tc.find("system-out")
        print(f"{st.upper()}: {tc.get('name')}: {(out.text if out is not None else '')[:400]}", file=sys.stderr)
print(a("tests") - failed - skipped, failed, skipped)
PY
)
  local p f s; read -r p f s <<<"$counts"
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "conformance ($label): the suite exited $rc"; fi
  echo "conformance ($label): $p passed, $f failed, $s skipped"
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f)); total_skip=$((total_skip + s))
  if [ -n "${CONFORMANCE_KEEP:-}" ]; then mkdir -p "$CONFORMANCE_KEEP/$label"; cp -r "$work/results/." "$work/node.log" "$CONFORMANCE_KEEP/$label/"; fi
  rm -rf "$work"
}

run_suite every-toggle true --sparse-manifests --auth none
# Metadata on PostgreSQL, when the tests have one (scripts/postgres.sh): the full run again.
if [ -n "${AF_TEST_POSTGRES_URL:-}" ]; then
  db="af_conformance_$$"
  psql "$AF_TEST_POSTGRES_URL" -qc "CREATE DATABASE $db"
  run_suite every-toggle-postgres true --sparse-manifests --auth none --database-url "${AF_TEST_POSTGRES_URL%/*}/$db"
  psql "$AF_TEST_POSTGRES_URL" -qc "DROP DATABASE $db WITH (FORCE)"
fi
export AF_ADMIN_USER=conformance AF_ADMIN_PASSWORD=conformance-password
OCI_USERNAME=$AF_ADMIN_USER OCI_PASSWORD=$AF_ADMIN_PASSWORD run_suite strict-references-with-auth false

echo "conformance: $total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ] && [ "$total_skip" -eq 0 ]
