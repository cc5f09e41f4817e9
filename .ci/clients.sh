#!/usr/bin/env bash
# The client examples end to end: installs the Python and Node dependencies,
# starts an already-built gateway on a free port, runs examples/python's and
# examples/node's tests against it (produce over gRPC, check every ack and
# per-record error in order, read the records back from Kafka with
# confluent-kafka) and stops the gateway, whatever happens.
#
#   bash .ci/clients.sh                      # gateway on its embedded broker
#   KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 bash .ci/clients.sh   # a real broker
#
# Environment:
#   KAFKA_GATEWAY_BIN        the gateway binary (default target/debug/kafka-gateway)
#   KAFKA_GATEWAY_ARGS       extra `serve` flags, split on spaces
#                            (e.g. "--enable-idempotence false")
#   KAFKA_BOOTSTRAP_SERVERS  use this broker instead of the embedded one. Each
#                            test then gets a new topic, created first by
#                            KAFKA_CREATE_TOPIC_CMD, or by
#                            examples/python/create_topic.py with
#                            KAFKA_TEST_PARTITIONS (default 3) partitions
#   KAFKA_CREATE_TOPIC_CMD   bash command creating the topic named by "$1", e.g.
#                            'tansu topic create "$1" --partitions 3'
#   KAFKA_TEST_TOPIC         an existing topic for both tests; nothing is created
#   KAFKA_CLIENTS_VENV       the Python virtualenv to (re)use
#                            (default ${TMPDIR:-/tmp}/kafka-gateway-clients-venv)
# Every step fails loudly; none is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }
die() { printf 'clients.sh: %s\n' "$*" >&2; exit 1; }

bin=${KAFKA_GATEWAY_BIN:-target/debug/kafka-gateway}
external=${KAFKA_BOOTSTRAP_SERVERS:-}
[ -x "$bin" ] || die "no gateway binary at $bin: build it first (cargo build) or set KAFKA_GATEWAY_BIN"
for cmd in python3 node npm; do
    command -v "$cmd" >/dev/null || die "$cmd is needed and not installed"
done
work=$(mktemp -d)
gateway_pid=

stop_gateway() {
    # SIGTERM, the graceful drain; SIGKILL if it is still there after 20 s.
    [ -n "$gateway_pid" ] || return 0
    local pid=$gateway_pid status=0
    gateway_pid=
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "gateway $pid still running 20 s after SIGTERM: killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" || status=$?
    return "$status"
}
cleanup() {
    local status=$?
    stop_gateway || true
    if [ "$status" -ne 0 ] && [ -s "$work/gateway.log" ]; then
        echo "--- gateway log (last 40 lines)" >&2
        tail -n 40 "$work/gateway.log" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "python $(python3 -c 'import platform; print(platform.python_version())'), node $(node --version), npm $(npm --version 2>/dev/null)"

step "Python requirements (examples/python/requirements.txt)"
venv=${KAFKA_CLIENTS_VENV:-${TMPDIR:-/tmp}/kafka-gateway-clients-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet -r examples/python/requirements.txt
"$venv/bin/python" -m pip freeze | grep -iE '^(grpcio|grpcio-tools|protobuf|confluent-kafka)=='
python=$venv/bin/python

step "Node dependencies (npm ci in examples/node)"
(cd examples/node && npm ci --no-audit --no-fund)

step "start the gateway ($bin)"
args=(serve --listen 127.0.0.1:0 --shutdown-timeout 10s)
if [ -n "$external" ]; then
    args+=(--bootstrap-servers "$external")
fi
if [ -n "${KAFKA_GATEWAY_ARGS:-}" ]; then
    read -r -a extra <<<"$KAFKA_GATEWAY_ARGS"
    args+=("${extra[@]}")
fi
echo "$bin ${args[*]}"
# The flags given here, not stray KAFKA_GATEWAY_* variables, decide where it listens and produces.
env -u KAFKA_GATEWAY_LISTEN -u KAFKA_GATEWAY_BOOTSTRAP_SERVERS NO_COLOR=1 \
    "$bin" "${args[@]}" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
log_value() { # the first value of NAME= on a line matching PATTERN, colours stripped
    sed -e 's/\x1b\[[0-9;]*m//g' "$work/gateway.log" | sed -n "/$1/{s/.*$2=\\([^ ]*\\).*/\\1/p;q}"
}
target=
for _ in $(seq 300); do
    target=$(log_value 'gRPC server listening' addr)
    [ -n "$target" ] && break
    kill -0 "$gateway_pid" 2>/dev/null || die "the gateway exited before listening"
    sleep 0.1
done
[ -n "$target" ] || die "the gateway did not log 'gRPC server listening addr=...' within 30 s"
if [ -n "$external" ]; then
    bootstrap=$external
else
    bootstrap=$(log_value 'embedded Kafka broker' bootstrap.servers)
    [ -n "$bootstrap" ] || die "the gateway did not log the embedded broker's bootstrap.servers"
fi
echo "gateway pid $gateway_pid: gRPC at $target, Kafka at $bootstrap"
export KAFKA_GATEWAY_TARGET=$target KAFKA_BOOTSTRAP_SERVERS=$bootstrap KAFKA_VERIFY_PYTHON=$python

# Sets $topic for one test. On an external broker, which may not create topics
# on first use, a new topic is created unless KAFKA_TEST_TOPIC names one.
choose_topic() {
    topic=${KAFKA_TEST_TOPIC:-}
    [ -n "$external" ] && [ -z "$topic" ] || return 0
    topic="kafka-gateway-ci-$1-$(date +%s)-$RANDOM"
    if [ -n "${KAFKA_CREATE_TOPIC_CMD:-}" ]; then
        echo "creating $topic: $KAFKA_CREATE_TOPIC_CMD"
        bash -c "$KAFKA_CREATE_TOPIC_CMD" create-topic "$topic" \
            || die "KAFKA_CREATE_TOPIC_CMD failed for $topic"
    else
        "$python" examples/python/create_topic.py "$topic" "${KAFKA_TEST_PARTITIONS:-3}" \
            || die "could not create topic $topic (set KAFKA_CREATE_TOPIC_CMD, or KAFKA_TEST_TOPIC to an existing topic)"
    fi
}

step "Python: examples/python/test_example.py"
choose_topic python
failed_runners=()
KAFKA_TEST_TOPIC=$topic "$python" examples/python/test_example.py 2>&1 | tee "$work/python.out" \
    || failed_runners+=(python)

step "Node: node --test examples/node/test.js"
choose_topic node
(cd examples/node && KAFKA_TEST_TOPIC=$topic node --test test.js) 2>&1 | tee "$work/node.out" \
    || failed_runners+=(node)

step "stop the gateway (SIGTERM, graceful drain, exit 0)"
stop_gateway || die "the gateway did not shut down cleanly (exit $?)"
tail -n 3 "$work/gateway.log"

# One closing line over both runners; a runner that ran nothing is a failure.
[ "${#failed_runners[@]}" -eq 0 ] || echo "FAILED: ${failed_runners[*]} (output above)"
awk '
    /^python: [0-9]+ passed, [0-9]+ failed$/ { py = 1; passed += $2; failed += $4 }
    /^# pass [0-9]+$/ { node = 1; passed += $3 }
    /^# fail [0-9]+$/ { failed += $3 }
    END {
        if (!py || !node) { print "clients: a test runner printed no summary"; exit 1 }
        if (passed == 0) { print "clients: no test ran"; exit 1 }
        printf "clients: %d passed, %d failed\n", passed, failed
        exit (failed > 0)
    }' "$work/python.out" "$work/node.out"
[ "${#failed_runners[@]}" -eq 0 ] || exit 1
