#!/usr/bin/env bash
# Instructions per record on the gateway's stream path, counted by
# valgrind's callgrind: a figure that hardly moves with the machine's load,
# unlike a throughput (runs repeat within about 2%). docs/benchmarks.md
# shows its output and how to read it.
#
# It builds the gateway, runs `kafka-gateway serve` under callgrind with its
# embedded broker, warms it up with a small `bench --target` run, zeroes the
# counters, pushes the measured workload through it (the bench's gateway
# strategy: by default 20,000 records of 100 bytes, 8 streams, batches of
# 200), dumps the counters, and reads them with callgrind_annotate:
#   - the whole gateway process, and the same without the embedded broker's
#     thread (rd_kafka_mock_cluster_thread_main, inclusive), which a
#     gateway in production does not run;
#   - the stream driver, kafka_gateway::produce::stream::drive (inclusive:
#     validation, the window, the send calls, the responses; see counts()
#     below for how it is found where it is inlined);
#   - librdkafka's produce call, rd_kafka_producev (inclusive);
#   - the process part by part (see parts() below): HTTP/2, decoding,
#     validation, the window, librdkafka's produce call and its own thread,
#     the delivery callback, the acks, encoding, metrics, tracing, and the
#     rest (tokio, tonic's and hyper's glue).
# Each is divided by the records pushed.
#
# Tracing is on, as in production, when OTEL_EXPORTER_OTLP_ENDPOINT names
# a collector (scripts/jaeger.sh start; eval "$(scripts/jaeger.sh env)"
# sets KAFKA_GATEWAY_TEST_JAEGER_OTLP, which is used when it is not set);
# CALLGRIND_TRACING=off measures without it, for its cost.
#
# Usage: .ci/callgrind.sh [RUNS]   (RUNS measurements, default 1; 2 shows
#        how far the count repeats)
#        .ci/callgrind.sh --check FILE   (CI's regression guard: three runs
#        of the release build, failing when the median cost of the process
#        without the broker is above FILE's baseline plus its tolerance)
# Environment: CALLGRIND_RECORDS (20000), CALLGRIND_BATCH (200),
#              CALLGRIND_RECORD_BYTES (100), CALLGRIND_DIR (target/callgrind),
#              CALLGRIND_PROFILE (profiling: release code with line tables,
#              a build of its own; release: the release build, whose figures
#              are the same but for the driver, which needs line tables),
#              CALLGRIND_TRACING (on: fail without a collector; off),
#              CALLGRIND_BIN (a kafka-gateway binary to measure instead of
#              building one, e.g. an older build).
# Needs valgrind (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
check=""
if [ "${1:-}" = "--check" ]; then
    check="${2:?--check needs the baseline file}"
    [ -f "$check" ] || { echo "no baseline file $check"; exit 1; }
    # The median of three: one run's count can stray by a few percent
    # (how librdkafka's threads happened to batch), three rarely do.
    runs=3
    profile="${CALLGRIND_PROFILE:-release}"
else
    runs="${1:-1}"
    profile="${CALLGRIND_PROFILE:-profiling}"
fi
tracing="${CALLGRIND_TRACING:-on}"
otlp="${OTEL_EXPORTER_OTLP_ENDPOINT:-${KAFKA_GATEWAY_TEST_JAEGER_OTLP:-}}"
case "$tracing" in
    on)
        [ -n "$otlp" ] || { echo "tracing is measured on, and no collector is named: start one (scripts/jaeger.sh start; eval \"\$(scripts/jaeger.sh env)\") or set OTEL_EXPORTER_OTLP_ENDPOINT; CALLGRIND_TRACING=off measures without tracing"; exit 1; }
        ;;
    off) otlp="" ;;
    *) echo "CALLGRIND_TRACING is on or off, not $tracing"; exit 1 ;;
esac
records="${CALLGRIND_RECORDS:-20000}"
batch="${CALLGRIND_BATCH:-200}"
record_bytes="${CALLGRIND_RECORD_BYTES:-100}"
out="${CALLGRIND_DIR:-target/callgrind}"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 1; }
mkdir -p "$out"

if [ -n "${CALLGRIND_BIN:-}" ]; then
    bin=$CALLGRIND_BIN
else
    cargo build --locked --profile "$profile"
    target_dir=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    bin="$target_dir/$profile/kafka-gateway"
fi

gateway_pid=""
cleanup() {
    if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill -TERM "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# The gateway's bench strategy against the gateway at $1, quietly.
push() { # ADDR RECORDS JSON
    "$bin" bench --strategies gateway --target "$1" --records "$2" --batch "$batch" \
        --record-bytes "$record_bytes" --trials 1 --no-latency-at-load --no-store-check \
        --max-time 600s --json "$3" >/dev/null 2>"$3.log" \
        || { cat "$3.log"; exit 1; }
}

# Instructions per record in the callgrind dump $1, as "total broker driver
# producev", all inclusive (callgrind_annotate --inclusive=yes):
#   total: PROGRAM TOTALS;
#   broker: rd_kafka_mock_cluster_thread_main, the embedded broker's thread;
#   driver: the stream driver. Its future is inlined into the task that runs
#     it (tokio_util's TrackedFuture::poll), so it is the cost of the lines
#     of src/produce/ inlined there, with everything they call (the window,
#     try_send and librdkafka, the responses);
#   producev: rd_kafka_producev, from the calls to it.
# callgrind_annotate lists a function once per source file its inlined code
# comes from, and once more, with an absolute path, as the target of calls;
# each (file, function) is taken once, at its largest.
counts() { # DUMP RECORDS
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null | python3 -c '
import re, sys
records = int(sys.argv[1])
root = sys.argv[2].rstrip("/") + "/"
total, entries = 0, {}
for line in sys.stdin:
    m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$", line)
    if not m:
        continue
    count, rest = int(m.group(1).replace(",", "")), m.group(2).strip()
    if rest == "PROGRAM TOTALS":
        total = count
        continue
    rest = re.sub(r"\s+\[[^\]]*\]$", "", rest)
    m = re.match(r"^([^:\s]*):(?!:)(.*)$", rest)
    if not m:
        continue
    path, function = m.group(1), m.group(2)
    path = path[len(root):] if path.startswith(root) else path
    key = (path, function)
    entries[key] = max(entries.get(key, 0), count)
def largest(pattern):
    return max((c for (p, f), c in entries.items() if re.search(pattern, f)), default=0)
def inlined(path_prefix):
    # Code of one source file wherever it runs, inlined or not.
    return sum(c for (p, f), c in entries.items() if p.startswith(path_prefix))
broker = largest(r"^rd_kafka_mock_cluster_thread_main$")
producev = largest(r"^rd_kafka_producev$")
driver = sum(c for (p, f), c in entries.items()
             if p.startswith("src/produce/")
             and re.search(r"TrackedFuture<F> as core::future::future::Future>::poll$|produce::stream::drive\b", f))
print(" ".join(str(round(n / records)) for n in (total, broker, driver, producev)))
# The process part by part: subtrees that do not contain one another, each
# inclusive; what none of them holds is the rest. Metrics and tracing are
# shown inside the parts that call them.
# (tonic_prost codecs: builds before the gateway had a codec of its own.)
decode = largest(r"ProduceRequest as kafka_gateway::codec::Wire>::read$|ProstDecoder<U> as tonic::codec::Decoder>::decode$")
encode = largest(r"ProduceResponse as kafka_gateway::codec::Wire>::write$|ProstEncoder<T> as tonic::codec::Encoder>::encode$")
send = largest(r"^kafka_gateway::produce::kafka::enqueue$")
parts = [
    ("HTTP/2 in: request frames into the decode buffer (tonic, h2)",
     largest(r"^tonic::codec::decode::StreamingInner::poll_frame$")),
    ("HTTP/2 connection: the socket, frame parsing and writing (hyper, h2)",
     largest(r"^<hyper::server::conn::http2::Connection<I,S,E> as core::future::future::Future>::poll$")),
    ("HTTP/2 out: the response stream, less encoding (hyper, tonic)",
     largest(r"H2Stream<F,B,Ex> as core::future::future::Future>::poll$") - encode),
    ("decoding requests (prost, sized by the codec)", decode),
    ("validation (produce::validate::prepare)", largest(r"^kafka_gateway::produce::validate::prepare$")),
    ("the window (where not inlined)",
     largest(r"Window<T>::poll_next_done$") + largest(r"Window<T>::try_next_done$")),
    ("librdkafka rd_kafka_producev", producev),
    ("the send call around it (headers, token, topic name)", send - producev),
    ("librdkafka broker threads (produce requests, responses)",
     largest(r"^rd_kafka_broker_thread_main$")),
    ("delivery reports (librdkafka events, the callback)",
     largest(r"BaseProducer<C,Part>::poll$")),
    ("acks: the result of each record, its tally and span bookkeeping",
     largest(r"Batches::resolve_delivered$")),
    ("encoding responses (the codec)", encode),
    ("the embedded broker (not in production)", broker),
]
rest = total - sum(c for _, c in parts)
parts.append(("the rest: the driver loop, tokio, tonic and hyper glue", rest))
if any(p.startswith("src/") for p, _ in entries):
    # (Only a build with line tables says which source file code came from.)
    parts.append(("  metrics, inside the parts above (src/metrics.rs)", inlined("src/metrics.rs")))
    parts.append(("  tracing, inside the parts above (src/telemetry/)", inlined("src/telemetry/")))
for label, count in parts:
    print(f"{label}|{round(count / records)}")
' "$2" "$PWD"
}

measured_runs=()
for run in $(seq 1 "$runs"); do
    rm -f "$out"/callgrind.out.* "$out"/gateway.log
    OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" RUST_LOG=info valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" \
        "$bin" serve --listen 127.0.0.1:0 --embedded-partitions 32 \
        >/dev/null 2>"$out/gateway.log" &
    gateway_pid=$!
    addr=""
    for _ in $(seq 1 600); do
        addr=$(grep -o 'gRPC server listening.*addr=[0-9.:]*' "$out/gateway.log" 2>/dev/null \
            | grep -o '[0-9.]*:[0-9]*$' | head -n 1 || true)
        [ -n "$addr" ] && break
        kill -0 "$gateway_pid" 2>/dev/null || { cat "$out/gateway.log"; exit 1; }
        sleep 0.5
    done
    [ -n "$addr" ] || { echo "the gateway under valgrind did not start serving"; exit 1; }
    # Warm up: connections, the topic on the embedded broker, the
    # allocator's and tokio's working sizes. Then count only what follows.
    push "$addr" 2000 "$out/warm-up.json"
    callgrind_control --zero "$gateway_pid" >/dev/null 2>&1
    push "$addr" "$records" "$out/measured.json"
    callgrind_control --dump=measured "$gateway_pid" >/dev/null 2>&1
    cleanup
    gateway_pid=""
    dump=$(ls -t "$out"/callgrind.out.*.1 2>/dev/null | head -n 1)
    [ -n "$dump" ] || { echo "no callgrind dump of the measured run"; exit 1; }
    cp "$dump" "$out/run-$run.callgrind"
    acked=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["runs"][0]["records_ok"])' "$out/measured.json")
    [ "$acked" = "$records" ] || { echo "only $acked of $records records acked"; exit 1; }
    counts "$dump" "$records" >"$out/run-$run.counts"
    read -r total broker driver producev <"$out/run-$run.counts"
    measured_runs+=("$((total - broker))")
    [ "$driver" != 0 ] || driver="n/a (no line tables in this build)"
    printf 'callgrind run %s: %s records through the gateway, tracing %s, instructions per record:\n' \
        "$run" "$records" "$tracing"
    printf '  gateway process, all threads             %8s\n' "$total"
    printf '    of which the embedded broker           %8s\n' "$broker"
    printf '  gateway process without the broker       %8s\n' "$((total - broker))"
    printf '  stream driver (produce::stream::drive)   %8s\n' "$driver"
    printf '  librdkafka rd_kafka_producev             %8s\n' "$producev"
    echo "  part by part:"
    tail -n +2 "$out/run-$run.counts" | while IFS='|' read -r label count; do
        printf '    %-70s %6s\n' "$label" "$count"
    done
done
echo "dumps: $out/run-*.callgrind (callgrind_annotate --inclusive=yes FILE)"

if [ -n "$check" ]; then
    baseline=$(sed -n 's/^baseline=\([0-9]*\)$/\1/p' "$check")
    tolerance=$(sed -n 's/^tolerance_percent=\([0-9]*\)$/\1/p' "$check")
    [ -n "$baseline" ] && [ -n "$tolerance" ] \
        || { echo "$check needs baseline=N and tolerance_percent=N lines"; exit 1; }
    measured=$(printf '%s\n' "${measured_runs[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
    limit=$((baseline * (100 + tolerance) / 100))
    echo "regression guard: $measured instructions per record (the process without the broker, tracing $tracing; the median of ${measured_runs[*]}); baseline $baseline, at most $limit (+$tolerance%)"
    if [ "$measured" -gt "$limit" ]; then
        echo "the gateway now costs $measured instructions per record, more than $baseline + $tolerance%: find what the change added with .ci/callgrind.sh 2 before and after it (docs/benchmarks.md), or, if the cost is meant, raise the baseline in $check and say why in the commit"
        exit 1
    fi
    if [ "$measured" -lt $((baseline * (100 - 2 * tolerance) / 100)) ]; then
        echo "far below the baseline: lower it in $check to $measured, so that the guard keeps this gain"
    fi
fi
