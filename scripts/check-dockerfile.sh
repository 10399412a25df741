#!/usr/bin/env bash
# The fallback where podman cannot build and run the image (scripts/build-image.sh and
# tests/container.rs do that wherever it can): the Dockerfile's steps checked by other means:
#  1. the build stage's COPY lines are the whole build context: a copy of exactly those paths
#     builds the binary with the stage's cargo command (debug profile, sharing the target dir,
#     so it costs seconds; the profile is the only difference);
#  2. the runtime stage's ENV, EXPOSE, ENTRYPOINT and CMD start a node whose API answers the
#     HEALTHCHECK command on the exposed port (on loopback), under the same init (tini, from
#     Debian, which the runtime stage must install);
#  3. SIGTERM to that init reaches the node, which stops gracefully and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
ctx=$(mktemp -d)
pid=
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$ctx"; }
trap cleanup EXIT

# Reads the Dockerfile into shell variables: copies, build command, env, port, command, health.
eval "$(python3 - <<'PY'
import json, re, shlex
stages, cur = [], None
text, joined = open("Dockerfile").read().splitlines(), []
for raw in text:
    raw = raw.strip()
    if not raw or raw.startswith("#"):
        continue
    if joined and joined[-1].endswith("\\"):
        joined[-1] = joined[-1][:-1].rstrip() + " " + raw
    else:
        joined.append(raw)
for line in joined:
    word, _, rest = line.partition(" ")
    if word == "FROM":
        cur = []
        stages.append(cur)
    cur.append((word, rest))
build, runtime = stages[0], stages[-1]
copies = [p for w, r in build if w == "COPY" for p in r.split()[:-1]]
# A RUN's --mount flags (build caches) do not change what it runs.
run = [" ".join(x for x in r.split() if not x.startswith("--mount=")) for w, r in build if w == "RUN"]
run = [r.split(" && ")[0] for r in run if r.startswith("cargo build")]
env = [kv for w, r in runtime if w == "ENV" for kv in r.split()]
expose = [r for w, r in runtime if w == "EXPOSE"]
entry_argv = [json.loads(r) for w, r in runtime if w == "ENTRYPOINT"]
init = ""
if entry_argv and entry_argv[0][:2] == ["/usr/bin/tini", "--"]:
    init = "/usr/bin/tini --"
    entry_argv[0] = entry_argv[0][2:]
installs = " ".join(r for w, r in runtime if w == "RUN")
entry = [" ".join(a) for a in entry_argv]
cmd = [" ".join(json.loads(r)) for w, r in runtime if w == "CMD"]
health = [r.split(" CMD ", 1)[1].replace(" || exit 1", "") for w, r in runtime if w == "HEALTHCHECK"]
# The exec form (a JSON array) as one shell command.
health = [shlex.join(json.loads(h)) if h.startswith("[") else h for h in health]
out = {
    "copies": " ".join(copies), "build_cmd": re.sub(r' --release| --profile "?\$?\w+"?', "", run[0]) if run else "",
    "envs": " ".join(env), "expose": expose[0].split()[0] if expose else "", "entry": entry[0] if entry else "",
    "cmd": cmd[0] if cmd else "", "health": health[0] if health else "",
    "init": init, "init_installed": "yes" if (not init or " tini" in installs) else "",
}
for k, v in out.items():
    print(f"{k}={shlex.quote(v)}")
PY
)"

[ -n "$build_cmd" ] || { echo "check-dockerfile: no 'RUN cargo build' in the build stage"; exit 1; }
for path in $copies; do mkdir -p "$ctx/$(dirname "$path")"; cp -r "$path" "$ctx/$path"; done
echo "check-dockerfile: building a context of only [$copies] with: $build_cmd"
(cd "$ctx" && CARGO_TARGET_DIR="$root/target" $build_cmd)

case " $envs " in *" AF_API=0.0.0.0:$expose "*) ;; *) echo "check-dockerfile: ENV AF_API does not listen on the EXPOSEd port $expose"; exit 1;; esac
[ "$entry" = "af" ] || { echo "check-dockerfile: ENTRYPOINT is '$entry', not af"; exit 1; }
[ -n "$health" ] || { echo "check-dockerfile: no HEALTHCHECK"; exit 1; }
[ -n "$init_installed" ] || { echo "check-dockerfile: the ENTRYPOINT runs tini but the runtime stage does not install it"; exit 1; }

# The image's environment, with the data directory moved to a temp dir and the listener on
# loopback, on the exposed port.
env $envs AF_DATA_DIR="$ctx/data" AF_GATEWAY=127.0.0.1:0 AF_RPC=127.0.0.1:0 AF_METRICS=127.0.0.1:0 AF_API="127.0.0.1:$expose" AF_LOG=info AF_SWARM=/ip4/127.0.0.1/tcp/0 \
  $init "$root/target/debug/$entry" $cmd >"$ctx/node.log" 2>&1 &
pid=$!
healthy=
for _ in $(seq 100); do
  if env $envs AF_API="127.0.0.1:$expose" PATH="$root/target/debug:$PATH" bash -c "$health" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.1
done
[ -n "$healthy" ] || { echo "check-dockerfile: the node did not pass the HEALTHCHECK"; cat "$ctx/node.log"; exit 1; }
echo "check-dockerfile: '${init:+$init }$entry $cmd' serves the API on port $expose and passes the HEALTHCHECK"
kill -TERM "$pid"
status=0
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then echo "check-dockerfile: SIGTERM did not stop the node within 10 s"; exit 1; fi
wait "$pid" || status=$?
pid=
grep -q '"stopped"\|stopped$' "$ctx/node.log" || { echo "check-dockerfile: the node did not stop gracefully:"; cat "$ctx/node.log"; exit 1; }
[ "$status" = 0 ] || { echo "check-dockerfile: the node exited $status on SIGTERM"; exit 1; }
echo "check-dockerfile: SIGTERM to ${init:-the node} stopped the node gracefully (exit 0)"
