#!/usr/bin/env bash
# kcat as an outside reference: the same file of lines produced by
# `kcat -P` (librdkafka in C, idempotent, linger.ms=5) and by
# `kafka-gateway produce` through a running gateway, into the same broker.
# Prints each one's throughput and CPU seconds, and their ratios.
#
# The broker is the embedded one of a `kafka-gateway serve` process of its
# own (kcat works against it; not against tansu); the gateway under test is
# a second `kafka-gateway serve` pointed at it, so that the gateway's CPU is
# its own and the broker's is the same for both. Both topics are created
# first with 32 partitions (the bench's default). Throughput is lines over
# the wall time of the producing command, start-up included (a fraction of
# a second of several). CPU is user + system time: kcat's own process; the
# produce command's, plus the gateway's over the same span; and the
# broker's, for both. Each topic's stored records are counted afterwards
# from its high watermarks. Then the produce command runs once more, untimed,
# through a byte-counting TCP relay in front of the gateway, to a third
# topic: the bytes on the wire each way (TCP payload: HTTP/2 frames with
# their gRPC messages; no TCP/IP headers) and per record, which is where
# `--compress` shows (KCAT_PRODUCE_ARGS="--compress zstd").
#
# CI runs it on 50,000 lines (KCAT_LINES=50000: a few seconds) so that it
# cannot rot, and asserts no speed; docs/benchmarks.md has the full run.
# The gateway under test traces, as in production, when a collector is
# named (OTEL_EXPORTER_OTLP_ENDPOINT, or KAFKA_GATEWAY_TEST_JAEGER_OTLP from
# scripts/jaeger.sh env); KCAT_TRACING=off measures it without.
# Usage: .ci/kcat-compare.sh    (KCAT_LINES=1000000, KCAT_LINE_BYTES=100,
#        KCAT_COMPARE_DIR=target/kcat-compare; KCAT_PRODUCE_ARGS, e.g.
#        "--max-in-flight-batches 64", for the produce command;
#        KCAT_GATEWAY_BIN, a kafka-gateway binary to measure instead of
#        this checkout's release build, e.g. an older one)
# Needs kcat and GNU time (apt-get install kcat time).
set -euo pipefail
cd "$(dirname "$0")/.."
lines="${KCAT_LINES:-1000000}"
line_bytes="${KCAT_LINE_BYTES:-100}"
out="${KCAT_COMPARE_DIR:-target/kcat-compare}"
partitions=32
for cmd in kcat /usr/bin/time python3; do
    command -v "$cmd" >/dev/null || { echo "$cmd is missing (apt-get install kcat time python3)"; exit 1; }
done
mkdir -p "$out"
if [ -n "${KCAT_GATEWAY_BIN:-}" ]; then
    bin=$KCAT_GATEWAY_BIN
else
    cargo build --locked --release
    target_dir=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    bin="$target_dir/release/kafka-gateway"
fi
otlp=""
if [ "${KCAT_TRACING:-on}" = on ]; then
    otlp="${OTEL_EXPORTER_OTLP_ENDPOINT:-${KAFKA_GATEWAY_TEST_JAEGER_OTLP:-}}"
fi

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# LINES lines of LINE_BYTES bytes, each starting with its number.
python3 - "$lines" "$line_bytes" > "$out/input.txt" <<'PY'
import sys
lines, size = int(sys.argv[1]), int(sys.argv[2])
filler = ("abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1))
out = sys.stdout
for i in range(lines):
    head = f"{i:09d} "
    out.write(head + filler[: max(size - len(head), 0)] + "\n")
PY

# Starts `kafka-gateway serve ARGS` logging to LOG; sets $pid and $addr.
serve() { # LOG ARGS...
    local log=$1
    shift
    # Emptied here, not by the redirection below, which the background job
    # may run only after the first look: a log left by an earlier run would
    # give that run's address.
    : >"$log"
    OTEL_EXPORTER_OTLP_ENDPOINT="${serve_otlp:-}" RUST_LOG=info "$bin" serve --listen 127.0.0.1:0 "$@" >/dev/null 2>"$log" &
    pid=$!
    pids+=("$pid")
    addr=""
    for _ in $(seq 1 100); do
        addr=$(grep -o 'gRPC server listening.*addr=[0-9.:]*' "$log" | grep -o '[0-9.]*:[0-9]*$' | head -n 1 || true)
        [ -n "$addr" ] && return
        kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
        sleep 0.1
    done
    echo "kafka-gateway serve did not start: $log"
    exit 1
}
# CPU seconds (user + system) of process PID so far.
cpu() { # PID
    python3 -c '
import sys
stat = open(f"/proc/{sys.argv[1]}/stat").read()
fields = stat[stat.rfind(")") + 1:].split()
print((int(fields[11]) + int(fields[12])) / 100)' "$1"
}
# Records stored in TOPIC: the sum of its partitions' high watermarks.
stored() { # TOPIC
    local args=()
    for p in $(seq 0 $((partitions - 1))); do args+=(-t "$1:$p:-1"); done
    kcat -Q -b "$broker" "${args[@]}" | python3 -c '
import re, sys
print(sum(int(m.group(1)) for m in re.finditer(r"offset (-?\d+)", sys.stdin.read())))'
}

serve "$out/broker.log" --embedded-partitions "$partitions"
broker_pid=$pid
broker_grpc=$addr
broker=$(grep -m 1 -o 'bootstrap.servers=[0-9.:]*' "$out/broker.log" | cut -d= -f2)
serve_otlp=$otlp serve "$out/gateway.log" --bootstrap-servers "$broker"
echo "the gateway under test: tracing ${otlp:+on, to }${otlp:-off}"
gateway_pid=$pid
gateway=$addr
topic_kcat="kcat-compare-kcat-$$"
topic_gateway="kcat-compare-gateway-$$"
# Create both topics with the same partitions (the broker process's own
# gateway creates a topic on first use), with one record each.
for topic in "$topic_kcat" "$topic_gateway"; do
    echo created | "$bin" produce --target "$broker_grpc" -t "$topic" -q
done

# kcat: idempotent, linger.ms=5, the file as it is (one record per line).
broker_before=$(cpu "$broker_pid")
/usr/bin/time -f '%e %U %S' -o "$out/kcat.time" \
    kcat -P -b "$broker" -t "$topic_kcat" -X enable.idempotence=true -X linger.ms=5 \
    -l "$out/input.txt"
broker_kcat=$(python3 -c "print($(cpu "$broker_pid") - $broker_before)")

# The produce command through the gateway (its defaults: idempotent,
# linger.ms=5).
broker_before=$(cpu "$broker_pid")
gateway_before=$(cpu "$gateway_pid")
/usr/bin/time -f '%e %U %S' -o "$out/produce.time" \
    "$bin" produce --target "$gateway" -t "$topic_gateway" -q ${KCAT_PRODUCE_ARGS:-} < "$out/input.txt"
gateway_cpu=$(python3 -c "print($(cpu "$gateway_pid") - $gateway_before)")
broker_gateway=$(python3 -c "print($(cpu "$broker_pid") - $broker_before)")

stored_kcat=$(stored "$topic_kcat")
stored_gateway=$(stored "$topic_gateway")
python3 - "$lines" "$out/kcat.time" "$out/produce.time" "$gateway_cpu" "$broker_kcat" \
    "$broker_gateway" "$stored_kcat" "$stored_gateway" <<'PY'
import sys
lines = int(sys.argv[1])
def timed(path):
    wall, user, system = map(float, open(path).read().split()[-3:])
    return wall, user + system
kcat_wall, kcat_cpu = timed(sys.argv[2])
produce_wall, produce_cpu = timed(sys.argv[3])
gateway_cpu, broker_kcat, broker_gateway = map(float, sys.argv[4:7])
stored_kcat, stored_gateway = int(sys.argv[7]) - 1, int(sys.argv[8]) - 1
problems = [f"{name} stored {n} of {lines} lines"
            for name, n in (("kcat", stored_kcat), ("the gateway", stored_gateway)) if n != lines]
if problems:
    sys.exit("kcat compare: " + "; ".join(problems))
kcat_rate, gateway_rate = lines / kcat_wall, lines / produce_wall
gateway_total = produce_cpu + gateway_cpu
print(f"{lines:,} lines, each stored once (high watermarks); CPU is user + system seconds")
print(f"  kcat -P                 {kcat_wall:6.2f} s  {kcat_rate:>9,.0f} records/s  "
      f"CPU {kcat_cpu:5.2f} s                           broker {broker_kcat:5.2f} s")
print(f"  kafka-gateway produce   {produce_wall:6.2f} s  {gateway_rate:>9,.0f} records/s  "
      f"CPU {gateway_total:5.2f} s (client {produce_cpu:.2f} + gateway {gateway_cpu:.2f})"
      f"  broker {broker_gateway:5.2f} s")
print(f"  gateway / kcat: throughput {gateway_rate / kcat_rate:.2f}x, "
      f"CPU {gateway_total / max(kcat_cpu, 0.01):.2f}x (broker excluded)")
print(f"  CPU per million records: kcat {kcat_cpu / lines * 1e6:.2f} s, produce + gateway "
      f"{gateway_total / lines * 1e6:.2f} s (client {produce_cpu / lines * 1e6:.2f} "
      f"+ gateway {gateway_cpu / lines * 1e6:.2f})")
PY

# The bytes on the wire between the produce command and the gateway: the
# same file once more through a relay that counts what it forwards (not
# timed: the relay is Python).
rm -f "$out/relay.bytes" "$out/relay.port"
python3 - "$gateway" "$out/relay" <<'PY' &
import asyncio, sys
host, port = sys.argv[1].rsplit(":", 1)
out = sys.argv[2]
counts = [0, 0]  # client -> gateway, gateway -> client

async def pipe(reader, writer, i):
    while data := await reader.read(1 << 16):
        counts[i] += len(data)
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()

async def relay(client_r, client_w):
    gateway_r, gateway_w = await asyncio.open_connection(host, int(port))
    try:
        await asyncio.gather(pipe(client_r, gateway_w, 0), pipe(gateway_r, client_w, 1))
    except ConnectionError:
        pass
    finally:
        client_w.close()
        gateway_w.close()
        with open(out + ".bytes", "w") as f:
            f.write(f"{counts[0]} {counts[1]}\n")

async def main():
    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    with open(out + ".port", "w") as f:
        f.write(f"{server.sockets[0].getsockname()[1]}\n")
    await server.serve_forever()

asyncio.run(main())
PY
pids+=("$!")
for _ in $(seq 100); do [ -s "$out/relay.port" ] && break; sleep 0.1; done
relay_port=$(cat "$out/relay.port")
topic_wire="kcat-compare-wire-$$"
echo created | "$bin" produce --target "$broker_grpc" -t "$topic_wire" -q
# shellcheck disable=SC2086
"$bin" produce --target "127.0.0.1:$relay_port" -t "$topic_wire" -q ${KCAT_PRODUCE_ARGS:-} < "$out/input.txt"
for _ in $(seq 100); do [ -s "$out/relay.bytes" ] && break; sleep 0.1; done
[ -s "$out/relay.bytes" ] || { echo "kcat compare: the relay counted nothing"; exit 1; }
stored_wire=$(stored "$topic_wire")
[ "$stored_wire" -eq $((lines + 1)) ] || { echo "kcat compare: through the relay, $((stored_wire - 1)) of $lines lines stored"; exit 1; }
read -r up down < "$out/relay.bytes"
python3 - "$lines" "$up" "$down" "$(stat -c %s "$out/input.txt")" <<'PY'
import sys
lines, up, down, size = map(int, sys.argv[1:])
print(f"  on the wire (produce <-> gateway, TCP payload): requests {up:,} bytes ({up / lines:.1f} per record, "
      f"{up / size:.2f}x the file's {size:,}), responses {down:,} bytes ({down / lines:.1f} per record)")
PY
