#!/usr/bin/env bash
# A tiny `kafka-gateway bench` (every strategy, two trials of a few thousand
# records each, the embedded broker), so the benchmark cannot rot. It checks
# that the run finished and that its report is complete: every strategy
# summarised over both trials, every ratio with its spread, CPU per million
# records for the client and, for gateway, the gateway process. It asserts
# no speed (the numbers of a shared CI machine mean nothing). tests/bench.rs
# checks the same report in more detail under `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${BENCH_SMOKE_DIR:-target/bench-smoke}"
mkdir -p "$out"
cargo run --release --locked -- bench --records 5000 --trials 2 --sample 1s \
    --json "$out/bench.json" --plot "$out/bench.svg"
python3 - "$out/bench.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
problems = []
strategies = ["native", "direct", "gateway", "seed-futures-ordered", "seed-spawn", "seed-sync"]

def spread(value, what):
    if not isinstance(value, dict) or not all(isinstance(value.get(k), (int, float)) for k in ("median", "min", "max")):
        problems.append(f"{what}: no median, min and max: {value!r}")
        return False
    if not value["min"] <= value["median"] <= value["max"]:
        problems.append(f"{what}: min, median and max out of order: {value!r}")
    return True

summaries = {s["strategy"]: s for s in report["strategies"]}
for name in strategies:
    s = summaries.get(name)
    if s is None:
        problems.append(f"no summary of {name}")
        continue
    if s["trials"] != 2:
        problems.append(f"{name}: {s['trials']} trials, not 2")
    if s["records_failed"]:
        problems.append(f"{name}: {s['records_failed']} records failed")
    for field in ("records_per_sec", "p50_ms", "p99_ms", "cpu_s_per_million", "total_cpu_s_per_million"):
        spread(s[field], f"{name} {field}")
    if name == "gateway":
        spread(s["gateway_cpu_s_per_million"], "gateway gateway_cpu_s_per_million")
for name in ("native", "direct", "seed_futures_ordered", "seed_spawn", "seed_sync"):
    key = f"gateway_vs_{name}"
    ratio = report["ratios"].get(key)
    if spread(ratio, key) and not (ratio["median"] > 0 and ratio["spread"] >= 1 and ratio["trials"] == 2):
        problems.append(f"{key}: {ratio!r}")
spread(report["ratios"].get("direct_vs_native"), "direct_vs_native")
at_load = report.get("latency_at_load") or {}
for key in ("gateway_p99_ms", "direct_p99_ms", "native_p99_ms"):
    if not isinstance(at_load.get(key), (int, float)):
        problems.append(f"latency_at_load lacks {key}")
gateway_runs = [r for r in report["runs"] if r["strategy"] == "gateway" and r["group"] == "main"]
if not all(r["gateway"] == "process" and r["gateway_cpu_seconds"] is not None for r in gateway_runs):
    problems.append("a gateway trial without the gateway process's CPU")
if problems:
    sys.exit("bench smoke: " + "; ".join(problems))
PY
grep -q '<svg' "$out/bench.svg" || { echo "no SVG chart"; exit 1; }
echo "bench smoke: ok ($out/bench.json, $out/bench.svg)"
