# Sourced, not run: what scripts/kafka.sh and scripts/jaeger.sh share about
# the one server each runs in the background: its pid file, whether a port
# answers, and stopping it. The sourcing script sets $pidfile and $state.

running_pid() { # the server's pid, if it runs
    [ -f "$pidfile" ] || return 1
    local pid
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

answers() { # PORT: something accepts connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

stop_server() { # WHAT SIGNAL: the signal, then SIGKILL after 30 s; WHAT names it in messages
    local what=$1 signal=$2 pid
    pid=$(running_pid) || { echo "no $what runs from $state"; return 0; }
    kill "-$signal" "$pid"
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$what still runs 30 s after SIG$signal: SIGKILL"
        kill -KILL "$pid"
        sleep 0.5
    fi
    rm -f "$pidfile"
    echo "stopped $what (pid $pid, SIG$signal)"
}
