#!/usr/bin/env bash
# Prints the directory of a Go module's source, downloaded through the Go module proxy:
#   scripts/go-module-dir.sh MODULE@VERSION "what it is" "how else to provide it"
# When the proxy does not serve it, prints one line naming what is missing, why, and the other
# ways to provide it, and exits 1 (never a traceback).
set -uo pipefail
module=$1 what=$2 otherwise=$3
json=$(go mod download -json "$module" 2>&1)
field() { printf '%s' "$json" | python3 -c "import json,sys
try:
    print(str(json.load(sys.stdin).get('$1') or '').splitlines()[0])
except Exception:
    print('')" 2>/dev/null; }
dir=$(field Dir)
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  why=$(field Error)
  [ -n "$why" ] || why=$(printf '%s' "$json" | head -c 200 | tr '\n' ' ')
  echo "$what ($module) is not available: the Go module proxy did not serve it (${why:-no answer}); $otherwise" >&2
  exit 1
fi
echo "$dir"
