#!/usr/bin/env bash
# A bounded soak (`kafka-gateway bench --soak`): 1,000 streams on a gateway
# process for 90 s, each sending a batch of 10 records a second. Fails when
# a record failed, answers came out of order, or the gateway's memory grew
# by more than 8 MiB after warm-up. docs/soak.md has the long run (10
# minutes) and the command to repeat it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${SOAK_SMOKE_DIR:-target/soak-smoke}"
mkdir -p "$out"
cargo run --release --locked -- bench --soak 90s --streams 1000 --batch 10 \
    --json "$out/soak.json"
python3 - "$out/soak.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
growth = report["growth_after_warm_up_mib"]
problems = []
if report["records_failed"]:
    problems.append(f"{report['records_failed']} records failed")
if report["answers_out_of_order"]:
    problems.append(f"{report['answers_out_of_order']} answers out of order")
if report["records_acked"] < 0.9 * report["streams"] * report["records_per_batch"] * report["duration_seconds"]:
    problems.append(f"only {report['records_acked']} records acked")
if growth > 8:
    problems.append(f"memory grew {growth:.1f} MiB after warm-up")
if problems:
    sys.exit("soak smoke: " + "; ".join(problems))
print(f"soak smoke: ok: {report['streams']} streams, {report['records_acked']} records acked, "
      f"peak RSS {report['peak_rss_mib']:.1f} MiB, growth after warm-up {growth:+.1f} MiB, "
      f"slope {report['slope_mib_per_minute']:+.2f} MiB/min")
PY
