#!/usr/bin/env bash
# Runs a command against tansu, an independent Kafka-compatible broker:
# installs it when missing, starts it on a free loopback port with memory
# storage, runs the command with the broker's address in
# KAFKA_GATEWAY_TEST_BOOTSTRAP_SERVERS (the integration tests) and
# KAFKA_BOOTSTRAP_SERVERS (the client examples), and stops it afterwards,
# on failure too.
#
#   bash .ci/with-tansu.sh cargo test --test produce
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 64; }

if ! command -v tansu >/dev/null; then
    echo "tansu is not installed: cargo install tansu (about 8 minutes on 2 cores)"
    cargo install tansu --locked --no-default-features --features dynostore
fi
tansu --version

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
tansu broker --storage-engine memory://tansu/ \
    --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    >"$log" 2>&1 &
pid=$!
stop() {
    local status=$?
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$status" -ne 0 ]; then
        echo "--- tansu log (last 20 lines)" >&2
        tail -n 20 "$log" >&2
    fi
    rm -f "$log"
    exit "$status"
}
trap stop EXIT
for _ in $(seq 100); do
    grep -q "ready in" "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "tansu exited at start" >&2; exit 1; }
    sleep 0.1
done
grep -q "ready in" "$log" || { cat "$log" >&2; echo "tansu did not start within 10 s" >&2; exit 1; }
echo "tansu on 127.0.0.1:$port (pid $pid)"

export KAFKA_GATEWAY_TEST_BOOTSTRAP_SERVERS=127.0.0.1:$port
export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$port
export TANSU_BROKER=tcp://127.0.0.1:$port
"$@"
