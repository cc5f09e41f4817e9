#!/usr/bin/env bash
# The README's shell blocks, run exactly as printed, in order, from the
# checkout's root as the README says, against the embedded broker; then
# each docs/ page's, on its own (its own gateway, stopped at its end).
#
#     bash .ci/readme.sh [PAGE.md ...]     (default: README.md, then every docs/*.md with a block)
#
# Hidden markers (<!-- readme: ... -->, see .ci/readme.py) say which block
# starts a gateway in the background (waited for until it serves, stopped
# with SIGTERM at the page's end, its log shown), which one exits non-zero
# on purpose, which sample log must match the real log, and which cannot
# run here (the reason is printed). A page's blocks share one shell, as in
# a terminal: a `cd` or a variable carries over to its next block.
#
# Fails loudly: a block that fails (or runs past 120 s,
# README_BLOCK_SECONDS), a malformed marker,
# a gateway that does not serve, a sample log line the gateway did not
# print, a page that leaves files in the checkout, a broken link between
# pages, or no block run at all. `cargo install --path . --locked` (the
# README's first block) installs into a scratch root, so the machine's
# ~/.cargo/bin is left alone; it reuses the checkout's target directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARGO_INSTALL_ROOT=$work/install
export PATH=$CARGO_INSTALL_ROOT/bin:$PATH
# A Rust toolchain installed by rustup puts cargo in ~/.cargo/bin: keep it
# reachable, after the scratch root.
[ -d "${CARGO_HOME:-$HOME/.cargo}/bin" ] && export PATH=$PATH:${CARGO_HOME:-$HOME/.cargo}/bin

if [ $# -gt 0 ]; then
    pages=("$@")
else
    pages=(README.md)
    for page in docs/*.md; do
        case "$page" in
            # Their commands are the long runs they report (minutes to
            # hours); CI runs each bounded in a step of its own.
            docs/benchmarks.md) echo "not run: $page (its runs take minutes; .ci/bench-smoke.sh and .ci/kcat-compare.sh run them small)" ;;
            docs/fuzzing.md) echo "not run: $page (fuzzing for hours; .ci/fuzz.sh runs each target 60 s)" ;;
            docs/soak.md) echo "not run: $page (a 10-minute soak; .ci/soak-smoke.sh runs 90 s)" ;;
            *) grep -qE '^\s*```(sh|bash|shell)\s*$' "$page" && pages+=("$page") ;;
        esac
    done
fi

# A page run without the README before it still needs the binary the
# README installs.
case " ${pages[*]} " in
    *" README.md "*) ;;
    *) echo "--- the README's install step, for the pages alone: cargo install --path . --locked"
       cargo install --path . --locked ;;
esac

echo "--- links between pages"
python3 .ci/readme.py links README.md docs/*.md deploy/kubernetes/README.md examples/*/README.md

# One driver script per page: each block sourced in one shell, in order.
driver() { # PAGE BLOCKDIR: prints the page's driver script
    local page=$1 dir=$2 name kind line argument
    cat <<EOF
set -uo pipefail
page=$(printf %q "$page")
blocks=$(printf %q "$dir")
source $(printf %q "$root/.ci/readme-lib.sh")
trap readme_end EXIT
trap 'echo "readme: this command failed with status \$?: \$BASH_COMMAND" >&2' ERR
cd $(printf %q "$root")
EOF
    while IFS=$'\t' read -r name kind line argument; do
        printf 'readme_block %q %q %q %q\n' "$name" "$kind" "$line" "$argument"
        case "$kind" in
            run) printf 'readme_watchdog; set -e; source "$blocks/%s.sh"; set +e; readme_done\n' "$name" ;;
            exit) printf 'readme_watchdog; status=0; (set -e; source "$blocks/%s.sh") || status=$?; readme_exit $status %q\n' "$name" "$argument" ;;
            background) printf 'set -m; (set -e; source "$blocks/%s.sh") >"$blocks/%s.log" 2>&1 & set +m; readme_background $! "$blocks/%s.log"\n' "$name" "$name" "$name" ;;
            expect-log) printf 'readme_expect_log "$blocks/%s.sh"\n' "$name" ;;
            file) printf 'readme_file "$blocks/%s.sh" %q\n' "$name" "$argument" ;;
            skip) ;;
        esac
    done <"$dir/manifest"
}

# The pages use the default addresses, as a reader would: the gateway's
# 127.0.0.1:50051 and the embedded broker's 127.0.0.1:9092. Something else
# listening there would answer instead (or move the broker), so wait for
# them to be free, and say so when they stay taken.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_ports_free() {
    local port
    for port in 50051 9092; do
        for _ in $(seq 300); do port_free "$port" && break; sleep 0.1; done
        port_free "$port" || { echo "readme: 127.0.0.1:$port is taken by another process; the pages' commands need it free"; exit 1; }
    done
}

total_ran=0
summary=()
for page in "${pages[@]}"; do
    dir=$work/$(echo "$page" | tr / _)
    python3 .ci/readme.py blocks "$page" "$dir"
    driver "$page" "$dir" >"$dir/driver.sh"
    wait_ports_free
    before=$(git status --porcelain --untracked-files=all)
    echo
    echo "=== $page: $(wc -l <"$dir/manifest") blocks"
    started=$SECONDS
    bash "$dir/driver.sh" || { echo "readme: $page failed (above)"; exit 1; }
    ran=$(cat "$dir/ran")
    total_ran=$((total_ran + ran))
    after=$(git status --porcelain --untracked-files=all)
    if [ "$before" != "$after" ]; then
        echo "readme: $page left the checkout changed (a block wrote into it):"
        diff <(echo "$before") <(echo "$after") || true
        exit 1
    fi
    summary+=("$page: $ran blocks ran, $(cat "$dir/skipped") skipped, $((SECONDS - started)) s")
done

echo
printf '%s\n' "${summary[@]}"
[ "$total_ran" -gt 0 ] || { echo "readme: no block ran"; exit 1; }
echo "readme: every block ran as printed ($total_ran in all)"
