#!/usr/bin/env bash
# A tiny `kafka-gateway bench` (a few thousand records, every strategy, the
# embedded broker), so the benchmark cannot rot. It checks that the run
# finished and that its report is complete; it asserts no speed (the numbers
# of a shared CI machine mean nothing). tests/bench.rs checks the same report
# in detail under `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${BENCH_SMOKE_DIR:-target/bench-smoke}"
mkdir -p "$out"
cargo run --release --locked -- bench --records 5000 --sample 1s \
    --json "$out/bench.json" --plot "$out/bench.svg"
for key in '"gateway_vs_direct": [0-9]' '"gateway_vs_seed_sync": [0-9]' \
    '"gateway_vs_seed_futures_ordered": [0-9]' '"latency_at_load": {'; do
    grep -q "$key" "$out/bench.json" || { echo "bench report lacks $key"; exit 1; }
done
grep -q '<svg' "$out/bench.svg" || { echo "no SVG chart"; exit 1; }
echo "bench smoke: ok ($out/bench.json, $out/bench.svg)"
