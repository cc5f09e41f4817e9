#!/usr/bin/env bash
# Jaeger on loopback, in one command: the trace store and UI the Jaeger test
# (tests/jaeger.rs) and the client examples export their spans to.
#
#   bash scripts/jaeger.sh start     # build it (once), start it, wait, print the endpoints
#   bash scripts/jaeger.sh status    # the endpoints if it runs; exit 1 if it does not
#   bash scripts/jaeger.sh env       # the same as `export` lines, for `eval "$(bash scripts/jaeger.sh env)"`
#   bash scripts/jaeger.sh stop      # SIGTERM, then SIGKILL after 30 s
#
# It is Jaeger v2 ($version, pinned once, in scripts/jaeger/go.mod), built
# from source with Go as a tool of the small module in scripts/jaeger/ (made
# by `go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0`). The
# first `start` downloads the modules (when the Go module cache lacks them)
# and builds the binary into the cache: measured with an empty Go build
# cache, 7.7 CPU-minutes, so about 4 minutes on a quiet 2-core machine (885 s
# on one busy with other builds, load 12). Later starts reuse the binary,
# offline, and answer within a second (measured 0.3 s).
#
# It runs all-in-one with in-memory storage (spans are gone when it stops),
# from a configuration written into the state folder: only the OTLP
# receivers and the query service, every one bound to 127.0.0.1:
#   OTLP/gRPC  $JAEGER_OTLP_GRPC_PORT (default 4317): where spans go in
#              (OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317)
#   OTLP/HTTP  $JAEGER_OTLP_HTTP_PORT (default 4318)
#   query      $JAEGER_QUERY_PORT (default 16686): the UI and the HTTP API
#              (/api/services, /api/traces/{traceId})
#   query gRPC $JAEGER_QUERY_GRPC_PORT (default 16685)
#   health     $JAEGER_HEALTH_PORT (default 13133): /status
#
# Environment:
#   JAEGER_*_PORT           the ports above; another Jaeger can run beside
#                           this one with other ports
#   JAEGER_STATE_DIR        its folder: configuration, its own log, pid
#                           (default ${TMPDIR:-/tmp}/kafka-gateway-jaeger-$JAEGER_QUERY_PORT)
#   KAFKA_GATEWAY_CACHE     where the binary is kept (default ~/.cache/kafka-gateway)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module=$here/jaeger

die() { printf 'jaeger.sh: %s\n' "$*" >&2; exit 1; }

version=$(sed -n 's:^\tgithub.com/jaegertracing/jaeger \(v[^ ]*\).*:\1:p' "$module/go.mod")
[ -n "$version" ] || die "no github.com/jaegertracing/jaeger requirement in $module/go.mod"
otlp_grpc_port=${JAEGER_OTLP_GRPC_PORT:-4317}
otlp_http_port=${JAEGER_OTLP_HTTP_PORT:-4318}
query_port=${JAEGER_QUERY_PORT:-16686}
query_grpc_port=${JAEGER_QUERY_GRPC_PORT:-16685}
health_port=${JAEGER_HEALTH_PORT:-13133}
state=${JAEGER_STATE_DIR:-${TMPDIR:-/tmp}/kafka-gateway-jaeger-$query_port}
cache=${KAFKA_GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kafka-gateway}
binary=$cache/jaeger-${version#v}/jaeger
pidfile=$state/jaeger.pid
log=$state/jaeger.log
config=$state/config.yaml
query=http://127.0.0.1:$query_port
otlp=http://127.0.0.1:$otlp_grpc_port

# running_pid, answers, stop_server.
. "$here/server.sh"

ready() { # the query API answers
    curl -fsS -o /dev/null --max-time 2 "$query/api/services" 2>/dev/null
}

print_endpoints() {
    echo "Jaeger $version on loopback (pid $(running_pid), log $log)"
    echo "  OTLP/gRPC  $otlp            (OTEL_EXPORTER_OTLP_ENDPOINT)"
    echo "  OTLP/HTTP  http://127.0.0.1:$otlp_http_port"
    echo "  query      $query           (UI; API: $query/api/traces/{traceId})"
    echo "  try: OTEL_EXPORTER_OTLP_ENDPOINT=$otlp kafka-gateway serve"
}

build() {
    [ -x "$binary" ] && return 0
    command -v go >/dev/null || die "Go is needed to build Jaeger: install Go 1.24 or newer"
    echo "building Jaeger $version into $binary (once; about 4 minutes on 2 idle cores, more when busy)"
    local started=$SECONDS
    mkdir -p "$(dirname "$binary")"
    # Jaeger's modules and build cache (about 4 GB) serve this one build:
    # both go to a scratch directory, removed after, and only the binary
    # (120 MB) stays.
    local scratch
    scratch=$(mktemp -d "$cache/jaeger-build.XXXXXX")
    local status=0
    (cd "$module" && GOCACHE=$scratch/cache GOMODCACHE=$scratch/mod GOFLAGS=-modcacherw \
        go build -o "$binary.tmp" github.com/jaegertracing/jaeger/cmd/jaeger) || status=$?
    rm -rf "$scratch"
    [ "$status" -eq 0 ] || die "building Jaeger failed (is the Go module proxy reachable? is the disk full? see the errors above)"
    mv "$binary.tmp" "$binary"
    echo "built in $((SECONDS - started)) s"
}

write_config() {
    cat >"$config" <<YAML
# Written by scripts/jaeger.sh: Jaeger all-in-one, in memory, on loopback.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    # No metrics endpoint of its own (it would take port 8888).
    metrics:
      level: none
    logs:
      level: info

extensions:
  jaeger_query:
    storage:
      traces: memstore
    # Spans as recorded: no clock-skew adjustment.
    max_clock_skew_adjust: 0s
    # Jaeger does not trace its own queries into the store.
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:$query_port
    grpc:
      endpoint: 127.0.0.1:$query_grpc_port
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:$health_port

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$otlp_grpc_port
      http:
        endpoint: 127.0.0.1:$otlp_http_port

processors:
  batch:

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
YAML
}

start() {
    if running_pid >/dev/null && ready; then
        print_endpoints
        return 0
    fi
    build
    command -v curl >/dev/null || die "curl is needed to see that Jaeger answers: apt-get install curl"
    for p in "$otlp_grpc_port" "$otlp_http_port" "$query_port" "$query_grpc_port" "$health_port"; do
        answers "$p" && die "port $p is taken by another program (another Jaeger? try" \
            "'JAEGER_QUERY_PORT=$query_port bash $0 status'): choose other ports with JAEGER_*_PORT"
    done
    mkdir -p "$state"
    write_config
    local started=$SECONDS
    nohup "$binary" --config "$config" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 600); do
        ready && answers "$otlp_grpc_port" && break
        running_pid >/dev/null || { tail -n 40 "$log" >&2; die "Jaeger exited at start (its log: $log)"; }
        sleep 0.1
    done
    ready || { tail -n 40 "$log" >&2; die "Jaeger's query API did not answer within 60 s (its log: $log)"; }
    echo "started in $((SECONDS - started)) s"
    print_endpoints
}

case "${1:-}" in
    start) start ;;
    status)
        running_pid >/dev/null && ready || { echo "no Jaeger answers on $query ($state)"; exit 1; }
        print_endpoints
        ;;
    env)
        running_pid >/dev/null && ready || die "no Jaeger answers on $query: run 'bash scripts/jaeger.sh start'"
        echo "export KAFKA_GATEWAY_TEST_JAEGER=$query"
        echo "export KAFKA_GATEWAY_TEST_JAEGER_OTLP=$otlp"
        ;;
    stop) stop_server Jaeger TERM ;;
    *)
        sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 64
        ;;
esac
