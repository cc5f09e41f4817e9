# Sourced by the page drivers .ci/readme.sh writes: what runs around each
# block. The driver sets $page (the page) and $blocks (its blocks'
# directory: NNN.sh, NNN.log of a background block, and the counts `ran`
# and `skipped` this file leaves for readme.sh).

die() { echo "readme: $*" >&2; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/gateway.sh"

readme_ran=0
readme_skipped=0
readme_name=''
readme_line=''
readme_bg_pids=()
readme_bg_logs=()
readme_last_log=''
readme_watchdog_pid=''
readme_block_seconds=${README_BLOCK_SECONDS:-120}

readme_block() { # NAME KIND LINE ARGUMENT: announces a block and prints it as it will run
    readme_name=$1
    readme_line=$3
    echo
    case "$2" in
        skip)
            echo "--- $page:$3 skipped: $4"
            readme_skipped=$((readme_skipped + 1))
            ;;
        file) echo "--- $page:$3 saved as $PWD/$4" ;;
        expect-log) echo "--- $page:$3 the sample log, each line in the log of $readme_last_log" ;;
        *) echo "--- $page:$3 ($2${4:+ $4})" ;;
    esac
    sed 's/^/    /' "$blocks/$1.sh"
    [ "$2" = skip ] || echo "---"
}

readme_watchdog() { # a block that runs past $readme_block_seconds is stopped (it then fails)
    local shell=$$ keep=" ${readme_bg_pids[*]:-} " flag=$blocks/watching.$readme_name
    : >"$flag"
    (
        for _ in $(seq "$readme_block_seconds"); do
            sleep 1
            [ -e "$flag" ] || exit 0
        done
        echo "readme: $page:$readme_line still running after $readme_block_seconds s: stopping it" >&2
        for pid in $(ps -o pid= --ppid "$shell"); do
            case "$keep $BASHPID " in *" $pid "*) ;; *) kill -TERM "$pid" 2>/dev/null || true ;; esac
        done
    ) &
    readme_watchdog_pid=$!
}

readme_unwatch() { # the watchdog sees its flag gone and ends within a second
    [ -n "$readme_watchdog_pid" ] || return 0
    rm -f "$blocks/watching.$readme_name"
    readme_watchdog_pid=''
}

readme_done() {
    readme_unwatch
    readme_ran=$((readme_ran + 1))
}

readme_exit() { # STATUS WANTED: a block expected to exit with WANTED
    readme_unwatch
    [ "$1" -eq "$2" ] || die "$page:$readme_line exited with status $1, where the page says $2"
    echo "(exited $1, as the page says)"
    readme_ran=$((readme_ran + 1))
}

readme_background() { # PID LOG: a gateway started in the background; waits until it serves
    local pid=$1 log=$2
    readme_bg_pids+=("$pid")
    readme_bg_logs+=("$log")
    readme_last_log=$log
    wait_listening "$pid" "$log" "gateway of $page:$readme_line"
    for _ in $(seq 300); do
        grep -q 'producer reached the Kafka brokers: serving' "$log" && break
        kill -0 "$pid" 2>/dev/null || die "the gateway of $page:$readme_line exited before serving"
        sleep 0.1
    done
    grep -q 'producer reached the Kafka brokers: serving' "$log" \
        || die "the gateway of $page:$readme_line listens on $started_addr but did not reach its brokers within 30 s"
    echo "(in the background: serving on $started_addr)"
    readme_ran=$((readme_ran + 1))
}

readme_expect_log() { # SAMPLE: each line of SAMPLE, but its timestamp and mktemp folders, is a line of the last background log
    local sample=$1 missing line
    [ -n "$readme_last_log" ] || die "$page:$readme_line: an expect-log block with no background block before it"
    # Timestamps differ from run to run, and so do mktemp's folders.
    strip() { sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^[0-9T:.-]*Z  *//' -e 's#/tmp/tmp\.[A-Za-z0-9]*#/tmp/tmp.X#g' "$@"; }
    for _ in $(seq 50); do
        missing=$(strip "$sample" | grep -v '^$' | grep -vxF -f <(strip "$readme_last_log") || true)
        [ -z "$missing" ] && break
        sleep 0.1
    done
    if [ -n "$missing" ]; then
        echo "readme: the gateway did not log these lines of $page:$readme_line:" >&2
        echo "$missing" | sed 's/^/    /' >&2
        echo "its log:" >&2
        sed 's/^/    /' "$readme_last_log" >&2
        exit 1
    fi
    echo "(every line found in the gateway's log)"
    readme_ran=$((readme_ran + 1))
}

readme_file() { # BLOCK NAME: the block saved as NAME in the current directory
    cp "$1" "$2"
    readme_ran=$((readme_ran + 1))
}

readme_end() { # on exit: stop the background gateways, show their logs, report
    local status=$? i pid log
    readme_unwatch
    for i in "${!readme_bg_pids[@]}"; do
        pid=${readme_bg_pids[$i]}
        log=${readme_bg_logs[$i]}
        # The whole process group: the block's subshell and the gateway in it.
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 300); do
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 -- "-$pid" 2>/dev/null; then
            echo "readme: the background block's processes still run 30 s after SIGTERM: killing them" >&2
            kill -KILL -- "-$pid" 2>/dev/null || true
            [ "$status" -ne 0 ] || status=1
        fi
        wait "$pid" 2>/dev/null || true
        echo
        echo "--- the log of the background block $(basename "$log" .log) of $page (stopped with SIGTERM):"
        sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/    /' "$log"
        if grep -q 'gRPC server listening' "$log" && ! grep -q 'INFO kafka_gateway::server: bye' "$log"; then
            echo "readme: that gateway did not drain and say bye on SIGTERM" >&2
            [ "$status" -ne 0 ] || status=1
        fi
    done
    echo "$readme_ran" >"$blocks/ran"
    echo "$readme_skipped" >"$blocks/skipped"
    if [ "$status" -ne 0 ]; then
        echo >&2
        echo "readme: FAILED at $page:$readme_line (exit status $status)" >&2
    fi
    exit "$status"
}
