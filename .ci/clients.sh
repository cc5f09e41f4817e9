#!/usr/bin/env bash
# The client examples end to end: installs the Python and Node dependencies
# (Java's and Go's come with Maven and the go command, in their scripts),
# starts an already-built gateway on a free port, and a second one serving TLS
# that requires a client certificate and an API key (certificates made here
# with openssl, the principal stamped into an x-principal header), both
# producing to the same Kafka; runs the tests of examples/python, node, java
# (.ci/java-client.sh) and go (.ci/go-client.sh) against them (produce over
# gRPC in plaintext and over TLS with a bearer token, check every ack and
# per-record error in order, read the records back from Kafka with each
# language's Kafka client) and stops the gateways, whatever happens.
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
#                            'bash scripts/kafka.sh java org.apache.kafka.tools.TopicCommand
#                            --bootstrap-server 127.0.0.1:19092 --create --topic "$1" --partitions 3'
#   KAFKA_TEST_TOPIC         an existing topic for both tests; nothing is created
#   KAFKA_TEST_JAEGER_OTLP   a Jaeger's OTLP/gRPC endpoint (e.g. http://127.0.0.1:4317),
#   JAEGER_QUERY_URL         and its query API (e.g. http://127.0.0.1:16686): the Go
#                            test then also finds its trace in Jaeger (required)
#   KAFKA_CLIENTS_VENV       the Python virtualenv to (re)use
#                            (default ${TMPDIR:-/tmp}/kafka-gateway-clients-venv)
# Every step fails loudly; none is skipped, and a test that skips itself fails
# the run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }
die() { printf 'clients.sh: %s\n' "$*" >&2; exit 1; }

bin=${KAFKA_GATEWAY_BIN:-target/debug/kafka-gateway}
external=${KAFKA_BOOTSTRAP_SERVERS:-}
[ -x "$bin" ] || die "no gateway binary at $bin: build it first (cargo build) or set KAFKA_GATEWAY_BIN"
for cmd in python3 node npm openssl sha256sum; do
    command -v "$cmd" >/dev/null || die "$cmd is needed and not installed"
done
work=$(mktemp -d)
gateway_pid=
tls_gateway_pid=

# The flags given here, not stray variables, decide where the gateways listen
# and produce and what they require; and the clients' TLS and token variables
# are the tests' to set.
unset KAFKA_GATEWAY_LISTEN KAFKA_GATEWAY_BOOTSTRAP_SERVERS KAFKA_GATEWAY_TLS_CERT \
    KAFKA_GATEWAY_TLS_KEY KAFKA_GATEWAY_TLS_CLIENT_CA KAFKA_GATEWAY_JWT_JWKS KAFKA_GATEWAY_API_KEYS \
    KAFKA_GATEWAY_AUTHZ_POLICY KAFKA_GATEWAY_PRINCIPAL_HEADER KAFKA_GATEWAY_AUTH_PROTECT_HEALTH \
    KAFKA_GATEWAY_CA KAFKA_GATEWAY_CLIENT_CERT KAFKA_GATEWAY_CLIENT_KEY \
    KAFKA_GATEWAY_TLS_SERVER_NAME KAFKA_GATEWAY_TOKEN KAFKA_GATEWAY_TOKEN_FILE
# The gateways here do not trace (a tracing gateway adds a traceparent header
# to every record, which the Python and Node tests would find); the Go test
# starts a tracing one of its own when KAFKA_TEST_JAEGER_OTLP is set.
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT OTEL_TRACES_EXPORTER

# log_value, wait_listening, embedded_bootstrap, stop_gateway.
. .ci/gateway.sh

cleanup() {
    local status=$?
    # The TLS gateway first: it may produce to the other one's embedded broker.
    stop_gateway tls_gateway_pid || true
    stop_gateway gateway_pid || true
    if [ "$status" -ne 0 ]; then
        for log in "$work/gateway.log" "$work/tls-gateway.log" "$work/openssl.log"; do
            [ -s "$log" ] || continue
            echo "--- $(basename "$log") (last 40 lines)" >&2
            tail -n 40 "$log" >&2
        done
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

# start_gateway PIDVAR NAME FLAGS...: starts `serve` on a free port with FLAGS
# and $KAFKA_GATEWAY_ARGS, logging to $work/NAME.log; sets $PIDVAR at once (so
# that cleanup stops it whatever happens next), and $started_addr once it logs
# its gRPC address.
start_gateway() {
    local var=$1 name=$2 pid
    shift 2
    local log=$work/$name.log
    local args=(serve --listen 127.0.0.1:0 --shutdown-timeout 10s "$@")
    if [ -n "${KAFKA_GATEWAY_ARGS:-}" ]; then
        read -r -a extra <<<"$KAFKA_GATEWAY_ARGS"
        args+=("${extra[@]}")
    fi
    echo "$bin ${args[*]}"
    # Created here, not by the redirection below, which the background job
    # may run only after the first look (sed on a missing file fails, and
    # set -e ends the script).
    : >"$log"
    NO_COLOR=1 "$bin" "${args[@]}" >"$log" 2>&1 &
    pid=$!
    printf -v "$var" '%s' "$pid"
    wait_listening "$pid" "$log" "$name"
}

step "start the gateway ($bin)"
if [ -n "$external" ]; then
    start_gateway gateway_pid gateway --bootstrap-servers "$external"
else
    start_gateway gateway_pid gateway
fi
target=$started_addr
if [ -n "$external" ]; then
    bootstrap=$external
else
    bootstrap=$(embedded_bootstrap "$work/gateway.log")
fi
echo "gateway pid $gateway_pid: gRPC at $target, Kafka at $bootstrap"

step "a CA, server and client certificates (openssl), an API key, and a gateway that requires them"
pki=$work/pki
mkdir "$pki"
openssl_log=$work/openssl.log
ssl() { openssl "$@" 2>>"$openssl_log" || die "openssl $1 failed (its output is below)"; }
ssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=kafka-gateway CI CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "$pki/ca-key.pem" -out "$pki/ca.pem"
leaf() { # NAME CN EXTENSIONS: $pki/NAME.pem and $pki/NAME-key.pem, signed by the CA
    ssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
        -keyout "$pki/$1-key.pem" -out "$pki/$1.csr"
    printf '%s\n' "$3" >"$pki/$1.ext"
    ssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca-key.pem" \
        -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.pem"
}
leaf server localhost $'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature'
leaf client ci-client $'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature'
# An API key as the gateway files them: principal:<sha256 hex of the key>.
token=$(openssl rand -hex 24)
principal=ci-examples
printf '%s:%s\n' "$principal" "$(printf %s "$token" | sha256sum | cut -d' ' -f1)" >"$pki/api-keys.txt"
openssl x509 -in "$pki/server.pem" -noout -subject -ext subjectAltName
# Producing to the same Kafka, so the tests read back what it stored.
start_gateway tls_gateway_pid tls-gateway --bootstrap-servers "$bootstrap" \
    --tls-cert "$pki/server.pem" --tls-key "$pki/server-key.pem" --tls-client-ca "$pki/ca.pem" \
    --api-keys "$pki/api-keys.txt" --principal-header x-principal
# By name, as clients usually reach a TLS server: an IP address is no server
# name (SNI), which Node warns about and the gateway's TLS library logs.
tls_target=https://localhost:${started_addr##*:}
echo "TLS gateway pid $tls_gateway_pid: gRPC at $tls_target (client certificate and API key required)"

export KAFKA_GATEWAY_TARGET=$target KAFKA_BOOTSTRAP_SERVERS=$bootstrap KAFKA_VERIFY_PYTHON=$python
export KAFKA_TEST_TLS_TARGET=$tls_target KAFKA_TEST_TLS_CA=$pki/ca.pem \
    KAFKA_TEST_TLS_CLIENT_CERT=$pki/client.pem KAFKA_TEST_TLS_CLIENT_KEY=$pki/client-key.pem \
    KAFKA_TEST_TOKEN=$token KAFKA_TEST_PRINCIPAL=$principal KAFKA_TEST_PRINCIPAL_HEADER=x-principal

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

step "Java: examples/java (JUnit under Maven: grpc-java, Kafka's Java consumer reads back, keys placed where KafkaProducer puts them)"
choose_topic java
KAFKA_TEST_TOPIC=$topic bash .ci/java-client.sh 2>&1 | tee "$work/java.out" || failed_runners+=(java)

step "Go: examples/go (go test: grpc-go, franz-go reads back; the trace in Jaeger when one is given)"
choose_topic go
(
    # A gateway of the Go test's own (KAFKA_GATEWAY_TARGET unset), producing
    # to the same Kafka, tracing into Jaeger when one is given; the TLS test
    # uses the TLS gateway above.
    unset KAFKA_GATEWAY_TARGET
    export KAFKA_GATEWAY_BIN=$bin KAFKA_TEST_TOPIC=$topic
    if [ -n "${KAFKA_TEST_JAEGER_OTLP:-}" ]; then
        [ -n "${JAEGER_QUERY_URL:-}" ] || die "KAFKA_TEST_JAEGER_OTLP is set without JAEGER_QUERY_URL"
        export OTEL_EXPORTER_OTLP_ENDPOINT=$KAFKA_TEST_JAEGER_OTLP KAFKA_TEST_JAEGER=1
    fi
    bash .ci/go-client.sh
) 2>&1 | tee "$work/go.out" || failed_runners+=(go)

step "Python: examples/python/transaction.py (a transactional stream and a read_committed consumer)"
if [ -z "$external" ]; then
    topic="kafka-gateway-ci-transaction-$(date +%s)-$RANDOM"
    "$python" examples/python/transaction.py "$target" "$bootstrap" "$topic" "ci-transaction-$RANDOM" \
        || failed_runners+=(transaction)
else
    # A real Kafka: the read_committed consumer must see nothing before the commit.
    topic=
    choose_topic transaction
    KAFKA_EXPECT_READ_COMMITTED=1 "$python" examples/python/transaction.py "$target" "$bootstrap" "$topic" \
        "ci-transaction-$RANDOM" || failed_runners+=(transaction)
fi

step "stop the gateways (SIGTERM, graceful drain, exit 0)"
stop_gateway tls_gateway_pid || die "the TLS gateway did not shut down cleanly (exit $?)"
tail -n 2 "$work/tls-gateway.log"
stop_gateway gateway_pid || die "the gateway did not shut down cleanly (exit $?)"
tail -n 3 "$work/gateway.log"

# One closing line over both runners; a runner that ran nothing, or a test
# that skipped itself (here every gateway it needs is running), is a failure.
[ "${#failed_runners[@]}" -eq 0 ] || echo "FAILED: ${failed_runners[*]} (output above)"
awk '
    /^python: [0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$/ { py = 1; passed += $2; failed += $4; skipped += $6 }
    /^# pass [0-9]+$/ { node = 1; passed += $3 }
    /^go: [0-9]+ passed, [0-9]+ failed$/ { go = 1; passed += $2; failed += $4 }
    /^java: [0-9]+ passed, [0-9]+ failed$/ { java = 1; passed += $2; failed += $4 }
    /^# fail [0-9]+$/ { failed += $3 }
    /^# skipped [0-9]+$/ { skipped += $3 }
    END {
        if (!py || !node || !java || !go) { print "clients: a test runner printed no summary"; exit 1 }
        if (passed == 0) { print "clients: no test ran"; exit 1 }
        if (skipped > 0) print "clients: tests skipped themselves (SKIP above), which none may do here"
        printf "clients: %d passed, %d failed, %d skipped\n", passed, failed, skipped
        exit (failed > 0 || skipped > 0)
    }' "$work/python.out" "$work/node.out" "$work/java.out" "$work/go.out"
[ "${#failed_runners[@]}" -eq 0 ] || exit 1
