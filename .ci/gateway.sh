# Sourced, not run: what the client scripts (.ci/clients.sh,
# .ci/java-client.sh, .ci/go-client.sh) do with a `kafka-gateway serve`
# they start themselves: read a value from its log, wait until it serves,
# and stop it gracefully. The sourcing script defines die MESSAGE.

log_value() { # FILE PATTERN NAME: the first value of NAME= on a line matching PATTERN, colours stripped
    sed -e 's/\x1b\[[0-9;]*m//g' "$1" | sed -n "/$2/{s/.*$3=\\([^ ]*\\).*/\\1/p;q}"
}

# wait_listening PID LOG NAME: waits up to 30 s until the gateway PID logs
# its gRPC address in LOG; sets $started_addr. NAME says which gateway in
# the error when it exits or never listens.
wait_listening() {
    local pid=$1 log=$2 name=$3 addr=''
    for _ in $(seq 300); do
        addr=$(log_value "$log" 'gRPC server listening' addr)
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || die "the $name exited before listening (its log is below)"
        sleep 0.1
    done
    [ -n "$addr" ] || die "the $name did not log 'gRPC server listening addr=...' within 30 s"
    started_addr=$addr
}

# embedded_bootstrap LOG: the embedded broker's address a gateway logged.
embedded_bootstrap() {
    local bootstrap
    bootstrap=$(log_value "$1" 'embedded Kafka broker' bootstrap.servers)
    [ -n "$bootstrap" ] || die "the gateway did not log the embedded broker's bootstrap.servers"
    echo "$bootstrap"
}

stop_gateway() { # VAR: SIGTERM to the gateway whose pid $VAR holds; its exit status
    # SIGTERM, the graceful drain; SIGKILL if it is still there after 20 s.
    local var=$1
    local pid=${!var} status=0
    [ -n "$pid" ] || return 0
    printf -v "$var" '%s' ''
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "gateway $pid still running 20 s after SIGTERM: killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" || status=$?
    return "$status"
}
