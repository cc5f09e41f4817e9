#!/usr/bin/env bash
# Keeps the Dockerfile honest without a container engine: runs its build
# command in a directory holding only what its build stage COPYs, then starts the built binary the way the image does (its ENV,
# ENTRYPOINT and CMD, on the embedded broker), probes it with the image's
# HEALTHCHECK command, checks /readyz and /metrics on the EXPOSEd port, and
# stops it with SIGTERM, which must drain and exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'image-check: %s\n' "$*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is needed (the image's HEALTHCHECK uses it)"

# The Dockerfile, read once: instruction -> its text (continuations joined).
dockerfile_field() {
    python3 - "$1" <<'PY'
import re, shlex, sys
want = sys.argv[1]
text = re.sub(r"\\\n", " ", open("Dockerfile").read())
lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
# Instructions of the final stage only, except RUN, searched in every stage.
last_from = max(i for i, l in enumerate(lines) if l.startswith("FROM "))
final = lines[last_from:]
if want == "BUILD":
    runs = [l[4:] for l in lines[:last_from] if l.startswith("RUN ") and "cargo build" in l]
    if len(runs) != 1:
        sys.exit("expected one RUN with cargo build in the build stage")
    m = re.search(r"cargo build[^&;]*", runs[0])
    print(m.group(0).strip())
elif want == "COPY":
    # What the build stage copies from the context.
    for l in lines[:last_from]:
        if l.startswith("COPY ") and "--from" not in l:
            print(" ".join(l.split()[1:-1]))
elif want == "ENV":
    for l in final:
        if l.startswith("ENV "):
            for pair in shlex.split(l[4:]):
                print(pair)
elif want == "EXPOSE":
    print(" ".join(p for l in final if l.startswith("EXPOSE ") for p in l.split()[1:]))
elif want == "HEALTHCHECK":
    (l,) = [l for l in final if l.startswith("HEALTHCHECK ")]
    print(l.split(" CMD ", 1)[1].strip())
elif want in ("ENTRYPOINT", "CMD"):
    import json
    (l,) = [l for l in final if l.startswith(want + " ")]
    print(" ".join(json.loads(l[len(want) + 1:])))
PY
}

build=$(dockerfile_field BUILD)
echo "build: $build"
[[ $build == "cargo build --release --locked"* ]] || die "the image must build with cargo build --release --locked"
context=$(mktemp -d)
# shellcheck disable=SC2046
cp -r $(dockerfile_field COPY) "$context"/
echo "build context: $(ls "$context" | tr '\n' ' ')"
# Into this checkout's target directory (CARGO_TARGET_DIR or ./target).
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
(cd "$context" && CARGO_TARGET_DIR="$target_dir" $build)
rm -rf "$context"

mapfile -t envs < <(dockerfile_field ENV)
entrypoint=$(dockerfile_field ENTRYPOINT)
cmd=$(dockerfile_field CMD)
healthcheck=$(dockerfile_field HEALTHCHECK)
read -r -a ports <<<"$(dockerfile_field EXPOSE)"
echo "env: ${envs[*]}"
echo "run: $entrypoint $cmd; expose: ${ports[*]}; healthcheck: $healthcheck"
[ "$entrypoint" = kafka-gateway ] || die "ENTRYPOINT is not the gateway binary"

log=$(mktemp)
# A clean environment plus the image's ENV, as in the container.
env -i PATH="$target_dir/release:/usr/bin:/bin" HOME=/tmp "${envs[@]}" \
    "$entrypoint" $cmd >"$log" 2>&1 &
pid=$!
trap 'kill -KILL $pid 2>/dev/null || true; tail -n 30 "$log"; rm -f "$log"' EXIT

healthy=
for _ in $(seq 100); do
    if sh -c "$healthcheck" >/dev/null 2>&1; then healthy=1; break; fi
    kill -0 "$pid" 2>/dev/null || die "the gateway exited at start"
    sleep 0.1
done
[ -n "$healthy" ] || die "the HEALTHCHECK did not pass within 10 s"
echo "HEALTHCHECK passed"

metrics_port=${ports[1]}
ready=
for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
done
[ -n "$ready" ] || die "/readyz on the EXPOSEd port $metrics_port did not report ready"
# Read whole before grep: `grep -q` stops at the first match, and curl,
# still writing, would fail the pipe (curl: (23), set -o pipefail).
metrics=$(curl -fsS "http://127.0.0.1:$metrics_port/metrics") || die "/metrics did not answer"
grep -q '^kafka_gateway_open_streams ' <<<"$metrics" \
    || die "/metrics lacks the gateway's metrics"
grep -q "gRPC server listening addr=0.0.0.0:${ports[0]}" "$log" \
    || die "the gRPC server is not on the EXPOSEd port ${ports[0]}"
echo "ready; metrics and gRPC on the EXPOSEd ports"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || die "SIGTERM: exit $status, not 0"
grep -q "producer flushed" "$log" || die "no drain on SIGTERM"
trap - EXIT
rm -f "$log"
echo "image-check: the Dockerfile's build, settings and probes work"
