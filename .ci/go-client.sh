#!/usr/bin/env bash
# The Go client example (examples/go) end to end: generates its code from
# proto/ (`go generate`: buf from npm, with protoc-gen-go and
# protoc-gen-go-grpc pinned as tools in its go.mod), vets it, and runs its
# tests against the gateway the environment names, as .ci/clients.sh sets
# it; when KAFKA_GATEWAY_TARGET is unset, against a plaintext gateway it
# starts here on the embedded broker, for a quick local run, and stops after.
#
#   bash .ci/go-client.sh                       # starts a gateway itself
#   KAFKA_GATEWAY_TARGET=127.0.0.1:50051 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 bash .ci/go-client.sh
#
# Time: the first run on a machine downloads the Go modules (about 100 MB
# into Go's module cache) and buf (into npm's cache) and compiles grpc-go,
# OpenTelemetry and franz-go: about 5 minutes on 2 cores shared with other
# builds. Later runs reuse those caches: 15 to 25 s, most of it the tests.
#
# Under CI=true the TLS test is required: run this from .ci/clients.sh, which
# starts the TLS gateway and sets its KAFKA_TEST_TLS_* variables.
#
# Environment (the tests' own variables are listed in
# examples/go/internal/kafkatest/kafkatest.go):
#   KAFKA_GATEWAY_TARGET         a running plaintext gateway; unset: one is started
#   KAFKA_BOOTSTRAP_SERVERS      its Kafka; with no KAFKA_GATEWAY_TARGET, the
#                                started gateway produces to it (--bootstrap-servers)
#                                instead of its embedded broker
#   KAFKA_GATEWAY_BIN            the gateway to start (default target/debug/kafka-gateway)
#   OTEL_EXPORTER_OTLP_ENDPOINT  also given to the started gateway, as service
#                                kafka-gateway, for the Jaeger test (with JAEGER_QUERY_URL)
# Ends with one line `go: N passed, N failed` counting the top-level tests;
# exits non-zero when a step or a test failed, or when no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'go-client.sh: %s\n' "$*" >&2; exit 1; }

for cmd in go npx; do
    command -v "$cmd" >/dev/null || die "$cmd is needed and not installed (Go for the module, npx (Node) for buf)"
done
work=$(mktemp -d)
gateway_pid=

# log_value, wait_listening, embedded_bootstrap, stop_gateway.
. .ci/gateway.sh
cleanup() {
    local status=$?
    stop_gateway gateway_pid || true
    if [ "$status" -ne 0 ] && [ -s "$work/gateway.log" ]; then
        echo "--- gateway.log (last 40 lines)" >&2
        tail -n 40 "$work/gateway.log" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${KAFKA_GATEWAY_TARGET:-}" ]; then
    bin=${KAFKA_GATEWAY_BIN:-target/debug/kafka-gateway}
    [ -x "$bin" ] || die "no gateway binary at $bin: build it (cargo build), set KAFKA_GATEWAY_BIN, or set KAFKA_GATEWAY_TARGET to a running gateway"
    args=(serve --listen 127.0.0.1:0 --shutdown-timeout 10s)
    [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ] && args+=(--bootstrap-servers "$KAFKA_BOOTSTRAP_SERVERS")
    echo "starting $bin ${args[*]}"
    : >"$work/gateway.log"
    # The flags, not stray KAFKA_GATEWAY_* variables, decide what it serves.
    (
        unset $(compgen -v KAFKA_GATEWAY_) 2>/dev/null || true
        if [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]; then export OTEL_SERVICE_NAME=kafka-gateway; fi
        exec env NO_COLOR=1 "$bin" "${args[@]}"
    ) >"$work/gateway.log" 2>&1 &
    gateway_pid=$!
    wait_listening "$gateway_pid" "$work/gateway.log" gateway
    export KAFKA_GATEWAY_TARGET=$started_addr
    if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
        KAFKA_BOOTSTRAP_SERVERS=$(embedded_bootstrap "$work/gateway.log")
        export KAFKA_BOOTSTRAP_SERVERS
    fi
    echo "gateway pid $gateway_pid: gRPC at $KAFKA_GATEWAY_TARGET, Kafka at $KAFKA_BOOTSTRAP_SERVERS"
fi

cd examples/go
echo "$(go version); go generate ./... (buf $(npx --yes @bufbuild/buf@1.75.0 --version))"
go generate ./... || die "go generate failed (output above)"
go vet ./... || die "go vet found problems (output above)"
echo "go test -count=1 -v ./... against $KAFKA_GATEWAY_TARGET (Kafka at ${KAFKA_BOOTSTRAP_SERVERS:-?})"
status=0
go test -count=1 -v -timeout 10m ./... 2>&1 | tee "$work/test.out" || status=$?

passed=$(grep -c '^--- PASS: ' "$work/test.out" || true)
failed=$(grep -c '^--- FAIL: ' "$work/test.out" || true)
skipped=$(grep '^--- SKIP: ' "$work/test.out" | sed 's/^--- SKIP: \([^ ]*\).*/\1/' | tr '\n' ' ' || true)
[ -z "$skipped" ] || echo "skipped (their reasons are above): $skipped"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "go test exited $status with no failing test named (a build failure or a panic above): counted as 1 failure"
    failed=1
fi
[ $((passed + failed)) -gt 0 ] || die "no test ran (output above)"
echo "go: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
