#!/usr/bin/env bash
# The gateway against the real Apache Kafka broker of scripts/kafka.sh, and
# against the ways of producing without it, in one run with interleaved
# trials:
#   gateway   `kafka-gateway produce` on a file of lines, through a
#             `kafka-gateway serve` process producing to the broker
#   native    librdkafka from Rust alone (`kafka-gateway bench --strategies
#             native`: a ThreadedProducer), the ceiling of producing from Rust
#   kcat      `kcat -P` on the same file: librdkafka driven from C
#   java      Apache Kafka's own org.apache.kafka.tools.ProducerPerformance
#             (its throughput is the one it reports, without the JVM's start;
#             its CPU includes the start and the JIT)
# All with the same settings: acks=all, idempotence on, linger.ms=5, no
# compression, batches of up to 1,000,000 bytes (librdkafka's batch.size;
# the Java producer's own default, 16 KiB, would hold it back), records of
# BENCH_RECORD_BYTES bytes (no key; native's
# workload carries a 12-byte key inside those bytes), each trial into a new
# topic of BENCH_PARTITIONS partitions. Every trial's topic is counted
# afterwards: a trial that stored fewer records than it sent fails the run.
#
# For each it reports records/s and CPU seconds per million records: the
# client's (for gateway, the produce command's plus the gateway process's),
# and the broker's own over the same trial. Medians over the trials, with
# min and max; ratios against kcat and against ProducerPerformance.
#
#   bash scripts/kafka.sh start
#   bash scripts/kafka-bench.sh                      # 1M records, 3 rounds
#   BENCH_RECORDS=50000 BENCH_ROUNDS=1 bash scripts/kafka-bench.sh   # what CI runs
#
# Environment: BENCH_RECORDS (1000000), BENCH_RECORD_BYTES (100),
# BENCH_ROUNDS (3), BENCH_PARTITIONS (6), BENCH_DIR (target/kafka-bench),
# KAFKA_PORT (the broker's, as for scripts/kafka.sh), KAFKA_GATEWAY_BIN (a
# release build of kafka-gateway; built when unset). Needs kcat and Java.
# The JSON of every trial goes to $BENCH_DIR/kafka-bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${BENCH_RECORDS:-1000000}
record_bytes=${BENCH_RECORD_BYTES:-100}
rounds=${BENCH_ROUNDS:-3}
partitions=${BENCH_PARTITIONS:-6}
out=${BENCH_DIR:-target/kafka-bench}
kafka=(bash scripts/kafka.sh)

die() { printf 'kafka-bench.sh: %s\n' "$*" >&2; exit 1; }
for cmd in kcat python3 java; do
    command -v "$cmd" >/dev/null || die "$cmd is needed (apt-get install kcat; Java 17)"
done
status=$("${kafka[@]}" status) || die "no broker: start it with 'bash scripts/kafka.sh start'"
broker=$(sed -n 's/^ *bootstrap.servers=\([0-9.:]*\).*/\1/p' <<<"$status" | sed -n 1p)
broker_pid=$(sed -n 's/.*(pid \([0-9]*\),.*/\1/p' <<<"$status" | sed -n 1p)
[ -n "$broker" ] && [ -n "$broker_pid" ] || die "cannot read the broker's address and pid from: $status"
if [ -z "${KAFKA_GATEWAY_BIN:-}" ]; then
    cargo build --locked --release
    target_dir=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    KAFKA_GATEWAY_BIN=$target_dir/release/kafka-gateway
fi
bin=$KAFKA_GATEWAY_BIN
mkdir -p "$out"

python3 - "$records" "$record_bytes" >"$out/input.txt" <<'PY'
import sys
lines, size = int(sys.argv[1]), int(sys.argv[2])
filler = "abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1)
out = sys.stdout
for i in range(lines):
    head = f"{i:09d} "
    out.write(head + filler[: max(size - len(head), 0)] + "\n")
PY

cpu() { # PID: its CPU seconds (user + system) so far
    python3 -c '
import sys
stat = open(f"/proc/{sys.argv[1]}/stat").read()
fields = stat[stat.rfind(")") + 1:].split()
print((int(fields[11]) + int(fields[12])) / 100)' "$1"
}
now() { python3 -c 'import time; print(time.monotonic())'; }
sub() { python3 -c "print(round($1 - $2, 3))"; }

new_topic() { # NAME: created with $partitions partitions
    "${kafka[@]}" java org.apache.kafka.tools.TopicCommand --bootstrap-server "$broker" --create \
        --topic "$1" --partitions "$partitions" --replication-factor 1 >/dev/null
}
stored() { # TOPIC: the sum of its partitions' high watermarks
    "${kafka[@]}" java org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$broker" --topic "$1" \
        | awk -F: '{ n += $3 } END { print n + 0 }'
}

gateway_log=$out/gateway.log
: >"$gateway_log"
RUST_LOG=info "$bin" serve --listen 127.0.0.1:0 --bootstrap-servers "$broker" >/dev/null 2>"$gateway_log" &
gateway_pid=$!
trap 'kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true' EXIT
gateway=""
for _ in $(seq 300); do
    gateway=$(sed -e 's/\x1b\[[0-9;]*m//g' "$gateway_log" | grep -o 'gRPC server listening.*addr=[0-9.:]*' \
        | grep -o '[0-9.]*:[0-9]*$' | head -n 1 || true)
    [ -n "$gateway" ] && break
    kill -0 "$gateway_pid" 2>/dev/null || { cat "$gateway_log"; die "the gateway exited at start"; }
    sleep 0.1
done
[ -n "$gateway" ] || die "the gateway did not start within 30 s (log: $gateway_log)"
echo "broker $broker (pid $broker_pid), gateway $gateway (pid $gateway_pid): $records records of $record_bytes bytes, $rounds rounds, $partitions partitions"

results=$out/trials.jsonl
: >"$results"
record_trial() { # NAME ROUND WALL CLIENT_CPU BROKER_CPU TOPIC
    local n
    n=$(stored "$6")
    [ "$n" -eq "$records" ] || die "$1 (round $2) stored $n of $records records in $6"
    printf '{"strategy":"%s","round":%s,"wall_s":%s,"client_cpu_s":%s,"broker_cpu_s":%s,"stored":%s}\n' \
        "$1" "$2" "$3" "$4" "$5" "$n" >>"$results"
    printf '  %-8s %6.2f s  %9.0f records/s  client CPU %6.2f s  broker CPU %6.2f s\n' \
        "$1" "$3" "$(python3 -c "print($records / $3)")" "$4" "$5"
}

trial() { # NAME ROUND
    local name=$1 round=$2 topic="bench-$1-$$-$2" start end broker0 gateway0 client
    new_topic "$topic"
    broker0=$(cpu "$broker_pid")
    case "$name" in
        gateway)
            gateway0=$(cpu "$gateway_pid")
            start=$(now)
            /usr/bin/time -f '%U %S' -o "$out/client.time" \
                "$bin" produce --target "$gateway" -t "$topic" -q <"$out/input.txt"
            end=$(now)
            client=$(python3 -c "u, s = open('$out/client.time').read().split()[-2:]; print(float(u) + float(s) + $(cpu "$gateway_pid") - $gateway0)")
            ;;
        kcat)
            start=$(now)
            /usr/bin/time -f '%U %S' -o "$out/client.time" \
                kcat -P -b "$broker" -t "$topic" -X enable.idempotence=true -X acks=all -X linger.ms=5 \
                -l "$out/input.txt"
            end=$(now)
            client=$(python3 -c "u, s = open('$out/client.time').read().split()[-2:]; print(float(u) + float(s))")
            ;;
        java)
            start=$(now)
            /usr/bin/time -f '%U %S' -o "$out/client.time" \
                "${kafka[@]}" java org.apache.kafka.tools.ProducerPerformance --topic "$topic" \
                --num-records "$records" --record-size "$record_bytes" --throughput -1 \
                --producer-props "bootstrap.servers=$broker" acks=all enable.idempotence=true linger.ms=5 \
                compression.type=none batch.size=1000000 >"$out/java.out"
            end=$(now)
            client=$(python3 -c "u, s = open('$out/client.time').read().split()[-2:]; print(float(u) + float(s))")
            # Its own rate, from its first send to its last ack: the JVM's
            # start (a second or two) is not Kafka's producer's speed. Its
            # CPU above does include the start and the JIT.
            rate=$(sed -n 's/^[0-9]* records sent, \([0-9.]*\) records\/sec.*/\1/p' "$out/java.out" | tail -n 1)
            [ -n "$rate" ] || { cat "$out/java.out"; die "ProducerPerformance printed no final rate"; }
            end=$(python3 -c "print($start + $records / $rate)")
            ;;
        native)
            # bench's own trial: its records/s and CPU are its own, the
            # topic is the one it creates; the wall time is the run's.
            start=$(now)
            "$bin" bench --bootstrap-servers "$broker" --strategies native --records "$records" \
                --record-bytes "$record_bytes" --partitions "$partitions" --trials 1 --no-store-check \
                --no-latency-at-load --json "$out/native.json" >"$out/native.out" 2>&1 \
                || { cat "$out/native.out"; die "bench --strategies native failed"; }
            end=$(now)
            python3 - "$out/native.json" "$records" "$round" "$(sub "$(cpu "$broker_pid")" "$broker0")" >>"$results" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
run = next(r for r in report["runs"] if r["strategy"] == "native" and str(r["group"]).lower() == "main")
records, rate = int(sys.argv[2]), run["records_per_sec"]
if run["records_ok"] != records:
    sys.exit(f"native acked {run['records_ok']} of {records}")
print(json.dumps({"strategy": "native", "round": int(sys.argv[3]), "wall_s": records / rate,
                  "client_cpu_s": run["cpu_seconds"], "broker_cpu_s": float(sys.argv[4]), "stored": records}))
PY
            tail -n 1 "$results" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
wall, rate = r["wall_s"], int(sys.argv[1]) / r["wall_s"]
print("  native   %6.2f s  %9.0f records/s  client CPU %6.2f s  broker CPU %6.2f s" % (wall, rate, r["client_cpu_s"], r["broker_cpu_s"]))' "$records"
            return
            ;;
    esac
    record_trial "$name" "$round" "$(sub "$end" "$start")" "$client" "$(sub "$(cpu "$broker_pid")" "$broker0")" "$topic"
}

strategies=(gateway native kcat java)
for round in $(seq 1 "$rounds"); do
    echo "round $round of $rounds"
    # Each round in another order, so no strategy always follows another.
    for i in "${!strategies[@]}"; do
        trial "${strategies[$(((i + round - 1) % ${#strategies[@]}))]}" "$round"
    done
done

python3 - "$results" "$records" "$out/kafka-bench.json" <<'PY'
import json, statistics, sys
trials = [json.loads(line) for line in open(sys.argv[1])]
records = int(sys.argv[2])
def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
summary = {}
for name in ("gateway", "native", "kcat", "java"):
    mine = [t for t in trials if t["strategy"] == name]
    summary[name] = {
        "trials": len(mine),
        "records_per_sec": spread([records / t["wall_s"] for t in mine]),
        "client_cpu_s_per_million": spread([t["client_cpu_s"] * 1e6 / records for t in mine]),
        "broker_cpu_s_per_million": spread([t["broker_cpu_s"] * 1e6 / records for t in mine]),
    }
print(f"\n{records} records per trial; medians (min-max) over {summary['kcat']['trials']} trials")
print(f"{'':10}{'records/s':>26}{'client CPU-s/1M':>24}{'broker CPU-s/1M':>24}")
for name, s in summary.items():
    cells = []
    for key, fmt in (("records_per_sec", "{:,.0f}"), ("client_cpu_s_per_million", "{:.2f}"), ("broker_cpu_s_per_million", "{:.2f}")):
        v = s[key]
        cells.append(f"{fmt.format(v['median'])} ({fmt.format(v['min'])}-{fmt.format(v['max'])})")
    print(f"{name:10}{cells[0]:>26}{cells[1]:>24}{cells[2]:>24}")
ratios = {}
for base in ("kcat", "java"):
    for name in ("gateway", "native"):
        rounds = sorted({t["round"] for t in trials})
        per = []
        for r in rounds:
            a = next(t for t in trials if t["strategy"] == name and t["round"] == r)
            b = next(t for t in trials if t["strategy"] == base and t["round"] == r)
            per.append(b["wall_s"] / a["wall_s"])
        ratios[f"{name}_vs_{base}"] = spread(per)
print()
for key, v in ratios.items():
    print(f"{key:18} throughput {v['median']:.2f}x ({v['min']:.2f}-{v['max']:.2f})")
json.dump({"records": records, "summary": summary, "ratios": ratios, "trials": trials}, open(sys.argv[3], "w"), indent=2)
print(f"\nJSON: {sys.argv[3]}")
PY
