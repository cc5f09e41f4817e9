#!/usr/bin/env bash
# Fuzzing, bounded: builds the cargo-fuzz targets in fuzz/ (docs/fuzzing.md)
# and runs each for SECONDS_PER_TARGET seconds (default 60), starting from
# the committed seeds. Any crash, assert, timeout, leak or memory error fails
# the script with the input's path and the command that reproduces it. Per
# target it prints the runs executed and the coverage reached, then one
# closing line. A cargo-fuzz that cannot install or build fails it too.
#
# Usage: .ci/fuzz.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz: SECONDS_PER_TARGET must be a whole number of seconds above 0, not '$seconds'"
    exit 64
fi

# Pinned: its flags and output are what the rest of this script relies on.
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
    echo "cargo-fuzz $cargo_fuzz_version missing; installing"
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi
cargo fuzz --version

# cargo fuzz builds with -Zsanitizer=address, a flag a stable rustc takes
# only when told to behave as a nightly one. The sanitizer runtime itself
# ships with the stable toolchain.
export RUSTC_BOOTSTRAP=1
# With the sanitizer on, the cc crate instruments the C dependencies too,
# and librdkafka's configure then fails to link its checks against the
# instrumented zstd. The targets never call into C, so C stays as it is.
export CFLAGS="${CFLAGS:+$CFLAGS }-fno-sanitize=address"
export CXXFLAGS="${CXXFLAGS:+$CXXFLAGS }-fno-sanitize=address"
# --debug-assertions: overflow checks and debug_assert! are findings too.
# Build and run with the same flags, or `run` rebuilds everything.
fuzz_flags=(--sanitizer address --debug-assertions)

# The longest input per target: a batch of a few records with a topic name
# at Kafka's 249-character limit; a JSON line with a few headers, or a few
# lines for the line reader.
declare -A max_len=([produce_request]=4096 [produce_input]=1024)
targets=(produce_request produce_input)

if ! cargo metadata --locked --manifest-path fuzz/Cargo.toml --format-version 1 >/dev/null; then
    echo "fuzz: fuzz/Cargo.lock is out of date (the gateway's dependencies changed?); run" \
        "'cargo metadata --manifest-path fuzz/Cargo.toml >/dev/null', which adds what is missing" \
        "and keeps every other version, and commit fuzz/Cargo.lock"
    exit 1
fi
echo "fuzz/Cargo.lock is up to date"

echo "building ${targets[*]} (the first build compiles librdkafka and takes minutes)"
cargo fuzz build "${fuzz_flags[@]}"
listed=$(cargo fuzz list | sort | tr '\n' ' ')
expected=$(printf '%s\n' "${targets[@]}" | sort | tr '\n' ' ')
if [ "$listed" != "$expected" ]; then
    echo "fuzz: fuzz/Cargo.toml has targets '$listed' but this script runs '$expected'; add the new ones here"
    exit 1
fi

work=fuzz/target/ci
summary=()
for target in "${targets[@]}"; do
    # New inputs go to a scratch corpus; the committed seeds, and the inputs
    # of past findings, are only read (every one of them is run first).
    corpus=$work/corpus/$target
    log=$work/$target.log
    rm -rf "$corpus"
    mkdir -p "$corpus"
    args=(-max_total_time="$seconds" -max_len="${max_len[$target]}" -timeout=10 -print_final_stats=1)
    if [ -f "fuzz/$target.dict" ]; then
        args+=(-dict="fuzz/$target.dict")
    fi
    inputs=("$corpus" "fuzz/corpus/$target")
    if [ -d "fuzz/regressions/$target" ]; then
        inputs+=("fuzz/regressions/$target")
    fi
    echo "fuzzing $target for ${seconds}s (log: $log)"
    if ! cargo fuzz run "${fuzz_flags[@]}" "$target" "${inputs[@]}" -- "${args[@]}" \
        >"$log" 2>&1; then
        # The panic or the sanitizer's report, else the end of the log.
        report=$(grep -E -A3 'panicked at|==[0-9]+== ?ERROR' "$log" | head -n 40 || true)
        if [ -n "$report" ]; then
            printf '%s\n' "$report"
        else
            tail -n 40 "$log"
        fi
        echo "(the whole output: $log)"
        input=$(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | tail -n 1)
        echo
        echo "fuzz: $target CRASHED; input: ${input:-none written, see $log}"
        if [ -n "$input" ]; then
            echo "reproduce: RUSTC_BOOTSTRAP=1 CFLAGS=-fno-sanitize=address CXXFLAGS=-fno-sanitize=address \\"
            echo "    cargo fuzz run ${fuzz_flags[*]} $target $input"
        fi
        exit 1
    fi
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log")
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$done_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\) .*/\1/p' <<<"$done_line")
    corp=$(sed -n 's/.* corp: \([^ ]*\) .*/\1/p' <<<"$done_line")
    if [ -z "$runs" ] || [ -z "$cov" ]; then
        tail -n 30 "$log"
        echo "fuzz: $target ended without libFuzzer's summary; see $log"
        exit 1
    fi
    echo "$target: $runs runs in ${seconds}s, coverage $cov edges, $ft features, corpus $corp (inputs/bytes)"
    summary+=("$target $runs runs")
done

closing=$(printf '%s, ' "${summary[@]}")
echo "fuzz: ${closing}no crash"
