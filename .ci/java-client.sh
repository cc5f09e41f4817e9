#!/usr/bin/env bash
# The Java client example's tests (examples/java, JUnit 5 under Maven):
# GatewayProducer against an in-process fake gateway (reconnect-and-resend,
# flow control, the in-flight bound, traceparent), and through a running
# gateway: batches of every record shape acked in order and read back with
# Kafka's Java consumer, the same over TLS with a client certificate and an
# API key, the command-line example, and keyed records landing where Kafka's
# own KafkaProducer puts them. Ends with one line `java: N passed, N failed`
# counted from Surefire's reports; a run in which no test ran fails.
#
#   bash .ci/java-client.sh                 # starts a gateway on its embedded broker
#   KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 bash .ci/java-client.sh   # ... producing to a real Kafka
#   KAFKA_GATEWAY_TARGET=127.0.0.1:50051 KAFKA_BOOTSTRAP_SERVERS=... bash .ci/java-client.sh
#
# Time: the first run downloads Maven's plugins, grpc-java, protobuf (the
# protoc and protoc-gen-grpc-java binaries included), kafka-clients and JUnit
# into ~/.m2 (about 80 MB): about 75 s here. Later runs are offline: 15 to
# 20 s (Maven ~5 s, the tests ~10 s), about 40 s after a source change.
#
# Environment:
#   KAFKA_GATEWAY_TARGET     a running plaintext gateway (HOST:PORT). Set: this script
#                            starts nothing, and KAFKA_BOOTSTRAP_SERVERS must name the
#                            Kafka it produces to. Unset: it starts one (and stops it),
#                            on the embedded broker, or on KAFKA_BOOTSTRAP_SERVERS if set
#   KAFKA_GATEWAY_BIN        the gateway binary it starts (default target/debug/kafka-gateway)
#   KAFKA_GATEWAY_ARGS       extra `serve` flags for it, split on spaces
#   KAFKA_TEST_TOPIC, KAFKA_TEST_TLS_TARGET, KAFKA_TEST_TLS_CA, KAFKA_TEST_TLS_CLIENT_CERT,
#   KAFKA_TEST_TLS_CLIENT_KEY, KAFKA_TEST_TOKEN, KAFKA_TEST_PRINCIPAL,
#   KAFKA_TEST_PRINCIPAL_HEADER
#                            passed to the tests (see examples/java/src/test/.../TestEnv.java).
#                            Without KAFKA_TEST_TLS_TARGET the TLS tests are skipped, and say
#                            so, except under CI=true, where they fail (.ci/clients.sh starts
#                            the TLS gateway they need)
#   MAVEN_ARGS_EXTRA         extra mvn arguments, split on spaces (e.g. "-o" offline)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'java-client.sh: %s\n' "$*" >&2; exit 1; }

for cmd in mvn java; do
    command -v "$cmd" >/dev/null || die "$cmd is needed and not installed (Java 17+ and Maven 3.8+)"
done
work=$(mktemp -d)
gateway_pid=
summarized=

# log_value, wait_listening, embedded_bootstrap, stop_gateway.
. .ci/gateway.sh
cleanup() {
    local status=$?
    stop_gateway gateway_pid || true
    if [ "$status" -ne 0 ] && [ -z "$summarized" ] && [ -s "$work/gateway.log" ]; then
        echo "--- gateway.log (last 40 lines)" >&2
        tail -n 40 "$work/gateway.log" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "${KAFKA_GATEWAY_TARGET:-}" ]; then
    [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ] \
        || die "KAFKA_GATEWAY_TARGET is set, so KAFKA_BOOTSTRAP_SERVERS must name the Kafka that gateway produces to"
    echo "gateway $KAFKA_GATEWAY_TARGET (started elsewhere), Kafka $KAFKA_BOOTSTRAP_SERVERS"
else
    bin=${KAFKA_GATEWAY_BIN:-target/debug/kafka-gateway}
    [ -x "$bin" ] || die "no gateway binary at $bin: build it first (cargo build), set KAFKA_GATEWAY_BIN, or point KAFKA_GATEWAY_TARGET at a running gateway"
    # The flags below, not stray variables, decide where it listens and produces.
    unset KAFKA_GATEWAY_LISTEN KAFKA_GATEWAY_BOOTSTRAP_SERVERS KAFKA_GATEWAY_TLS_CERT \
        KAFKA_GATEWAY_TLS_KEY KAFKA_GATEWAY_TLS_CLIENT_CA KAFKA_GATEWAY_JWT_JWKS KAFKA_GATEWAY_API_KEYS \
        KAFKA_GATEWAY_AUTHZ_POLICY KAFKA_GATEWAY_PRINCIPAL_HEADER KAFKA_GATEWAY_AUTH_PROTECT_HEALTH
    args=(serve --listen 127.0.0.1:0 --shutdown-timeout 10s)
    [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] || args+=(--bootstrap-servers "$KAFKA_BOOTSTRAP_SERVERS")
    if [ -n "${KAFKA_GATEWAY_ARGS:-}" ]; then
        read -r -a extra <<<"$KAFKA_GATEWAY_ARGS"
        args+=("${extra[@]}")
    fi
    echo "$bin ${args[*]}"
    : >"$work/gateway.log"
    NO_COLOR=1 "$bin" "${args[@]}" >"$work/gateway.log" 2>&1 &
    gateway_pid=$!
    wait_listening "$gateway_pid" "$work/gateway.log" gateway
    export KAFKA_GATEWAY_TARGET=$started_addr
    if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
        KAFKA_BOOTSTRAP_SERVERS=$(embedded_bootstrap "$work/gateway.log")
        export KAFKA_BOOTSTRAP_SERVERS
    fi
    echo "gateway pid $gateway_pid: gRPC at $KAFKA_GATEWAY_TARGET, Kafka at $KAFKA_BOOTSTRAP_SERVERS"
fi

echo "$(java -version 2>&1 | sed -n 1p); $(mvn -v 2>/dev/null | sed -n 1p | sed 's/\x1b\[[0-9;]*m//g')"
reports=examples/java/target/surefire-reports
rm -rf "$reports"
mvn_args=(-B --no-transfer-progress)
if [ -n "${MAVEN_ARGS_EXTRA:-}" ]; then
    read -r -a extra <<<"$MAVEN_ARGS_EXTRA"
    mvn_args+=("${extra[@]}")
fi
mvn_status=0
# Maven 3.8 ends its output with colour resets and no newline, even with -B;
# stripped, so that the closing line below stands alone on its line.
(cd examples/java && mvn "${mvn_args[@]}" test 2>&1) | sed -u 's/\x1b\[[0-9;]*m//g' || mvn_status=$?

if [ -n "$gateway_pid" ]; then
    stop_gateway gateway_pid || die "the gateway did not shut down cleanly (exit $?)"
fi

# Surefire's reports, one <testsuite tests= failures= errors= skipped=> per class.
shopt -s nullglob
files=("$reports"/TEST-*.xml)
[ "${#files[@]}" -gt 0 ] || die "no Surefire report in $reports: no test ran (mvn exited $mvn_status; its output is above)"
# The one line closing this script (skips are reported above it); the
# gateway's log first when something failed.
summary=$(awk '
    /<testsuite / {
        for (i = 1; i <= NF; i++) {
            if (match($i, /^(tests|failures|errors|skipped)="[0-9]+"/)) {
                split($i, kv, "\"")
                n[substr($i, 1, index($i, "=") - 1)] += kv[2]
            }
        }
    }
    END {
        ran = n["tests"] - n["skipped"]
        failed = n["failures"] + n["errors"]
        if (n["skipped"] > 0) printf "java: %d skipped (the reason is in the output above)\n", n["skipped"]
        if (ran == 0) print "java: no test ran (every one skipped or none found)"
        printf "java: %d passed, %d failed\n", ran - failed, failed
        exit (ran == 0 || failed > 0)
    }' "${files[@]}") || { [ "$mvn_status" -ne 0 ] || mvn_status=1; }
if [ "$mvn_status" -ne 0 ] && [ -s "$work/gateway.log" ]; then
    echo "--- gateway.log (last 40 lines)"
    tail -n 40 "$work/gateway.log"
fi
summarized=1
printf '%s\n' "$summary"
[ "$mvn_status" -eq 0 ] || exit "$mvn_status"
