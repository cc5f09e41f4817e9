#!/usr/bin/env bash
# A real Apache Kafka broker on loopback, in one command: the broker the
# real-Kafka test suites, the client examples and the benchmark run against.
#
#   bash scripts/kafka.sh start     # fetch the jars (once), format, start, wait, print the addresses
#   bash scripts/kafka.sh status    # the addresses if it runs; exit 1 if it does not
#   bash scripts/kafka.sh env       # the same as `export` lines, for `eval "$(bash scripts/kafka.sh env)"`
#   bash scripts/kafka.sh stop      # SIGTERM, then SIGKILL after 30 s
#   bash scripts/kafka.sh kill      # SIGKILL, as a crash would (the log directory stays)
#   bash scripts/kafka.sh reset     # stop, and delete the log directory
#   bash scripts/kafka.sh java CLASS ARGS...   # a class of the broker's jars, e.g.
#        org.apache.kafka.tools.ProducerPerformance or org.apache.kafka.tools.AclCommand
#
# The broker is Apache Kafka $version (pinned once, in scripts/kafka/pom.xml),
# a single node in KRaft combined mode (broker and controller), from Maven
# Central's jars: the first `start` downloads them (about 60 MB, 10 to 60 s)
# into the cache; later starts are offline and take about 5 s. It needs Java
# 17 or newer and Maven.
#
# Listeners, all on 127.0.0.1:
#   PLAINTEXT  $KAFKA_PORT (default 19092): unauthenticated, and a super user
#              (its principal, User:ANONYMOUS, is one), for tests and admin tasks.
#   SASL_SSL   $KAFKA_PORT+1 (default 19093): SCRAM-SHA-512 over TLS, with a
#              test CA made at the first start ($state/pki/ca.pem). Users:
#                admin / admin-secret      a super user
#                gateway / gateway-secret  only what the ACLs below grant
#   CONTROLLER $KAFKA_PORT+2 (default 19094): KRaft's own.
#   INTERNAL   $KAFKA_PORT+3 (default 19095): the broker's own connections to
#              itself (transaction markers), so that a fault proxy in front of
#              PLAINTEXT harms only the clients.
# Authorization is on (StandardAuthorizer): a principal may do only what an
# ACL grants it. User "gateway" may describe the cluster, write idempotently,
# and create, describe and write topics, and use transactional ids, whose
# names start with "allowed-". Nothing else: a topic "denied-..." is refused.
# Topics are never created on first use (auto.create.topics.enable=false).
#
# Environment:
#   KAFKA_PORT              the PLAINTEXT port; the next three are SASL_SSL, CONTROLLER, INTERNAL
#   KAFKA_ADVERTISED_PORT   the PLAINTEXT port the broker tells clients to use
#                           (default KAFKA_PORT): a fault proxy's, so that every
#                           connection of a client goes through it
#   KAFKA_GRANT_ACLS        0: grant user "gateway" nothing (saves 5 s when
#                           only PLAINTEXT is used); default 1
#   KAFKA_STATE_DIR         the broker's folder: configuration, log directory,
#                           test CA, its own log, pid
#                           (default ${TMPDIR:-/tmp}/kafka-gateway-kafka-$KAFKA_PORT)
#   KAFKA_GATEWAY_CACHE     where the jars are kept (default ~/.cache/kafka-gateway)
#   KAFKA_HEAP_OPTS         the JVM's heap (default -Xms512m -Xmx512m)
# Two brokers can run at once with different KAFKA_PORTs (the crash tests
# start one of their own, so that killing it harms no other test).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pom=$here/kafka/pom.xml

die() { printf 'kafka.sh: %s\n' "$*" >&2; exit 1; }

version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
[ -n "$version" ] || die "no <kafka.version> in $pom"
port=${KAFKA_PORT:-19092}
sasl_port=$((port + 1))
controller_port=$((port + 2))
internal_port=$((port + 3))
advertised_port=${KAFKA_ADVERTISED_PORT:-$port}
state=${KAFKA_STATE_DIR:-${TMPDIR:-/tmp}/kafka-gateway-kafka-$port}
cache=${KAFKA_GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kafka-gateway}
lib=$cache/kafka-$version/lib
pidfile=$state/broker.pid
log=$state/broker.log
ca=$state/pki/ca.pem
bootstrap=127.0.0.1:$port
sasl_bootstrap=127.0.0.1:$sasl_port

# running_pid, answers, stop_server.
. "$here/server.sh"

print_addresses() {
    echo "Apache Kafka $version on loopback (pid $(running_pid), log $log)"
    echo "  bootstrap.servers=$bootstrap                 (PLAINTEXT, super user)"
    echo "  SASL_SSL bootstrap.servers=$sasl_bootstrap   (SCRAM-SHA-512 gateway/gateway-secret, admin/admin-secret; CA $ca)"
    echo "  try: kafka-gateway serve --bootstrap-servers $bootstrap"
}

fetch_jars() {
    [ -f "$lib/.complete" ] && return 0
    command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Kafka's jars: apt-get install maven"
    echo "fetching Apache Kafka $version's jars from Maven Central into $lib (once; 10 to 60 s)"
    local started=$SECONDS
    rm -rf "$lib"
    mkdir -p "$lib"
    mvn -B -q -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$lib" \
        || die "mvn could not fetch Kafka $version's jars (is Maven Central reachable?)"
    touch "$lib/.complete"
    echo "fetched $(find "$lib" -name '*.jar' | wc -l) jars in $((SECONDS - started)) s"
}

run_java() { # CLASS ARGS...: a class of the broker's jars
    fetch_jars >&2
    command -v java >/dev/null || die "Java 17 or newer is needed: apt-get install openjdk-17-jre-headless"
    java -Dlog4j2.configurationFile="$here/kafka/log4j2-tools.properties" -cp "$lib/*" "$@"
}

make_pki() { # a test CA and a certificate for 127.0.0.1 and localhost, once
    [ -f "$state/pki/server.pem" ] && return 0
    command -v openssl >/dev/null || die "openssl is needed for the test CA"
    local pki=$state/pki
    mkdir -p "$pki"
    (
        cd "$pki"
        openssl req -x509 -new -newkey rsa:2048 -nodes -days 30 -subj "/CN=kafka-gateway test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout ca-key.pem -out ca.pem
        openssl req -new -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker-key.pem -out broker.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >broker.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca-key.pem -set_serial "0x$(openssl rand -hex 8)" \
            -days 30 -extfile broker.ext -out broker.pem
        # Kafka reads a PEM key store: an unencrypted PKCS#8 key, then the chain.
        openssl pkcs8 -topk8 -nocrypt -in broker-key.pem -out broker-key.pk8
        cat broker-key.pk8 broker.pem ca.pem >server.pem
    ) >"$state/pki.log" 2>&1 || { cat "$state/pki.log" >&2; die "openssl failed making the test CA"; }
}

write_config() {
    cat >"$state/server.properties" <<EOF
# Written by scripts/kafka.sh: a single-node KRaft broker for tests.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl_port,CONTROLLER://127.0.0.1:$controller_port,INTERNAL://127.0.0.1:$internal_port
advertised.listeners=PLAINTEXT://127.0.0.1:$advertised_port,SASL_SSL://127.0.0.1:$sasl_port,INTERNAL://127.0.0.1:$internal_port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
log.dirs=$state/data

# SCRAM-SHA-512 over TLS on the SASL_SSL listener.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$state/pki/server.pem

# ACLs on: the PLAINTEXT, CONTROLLER and INTERNAL listeners' principal (ANONYMOUS) and
# admin are super users; "gateway" gets what start grants it.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:admin
allow.everyone.if.no.acl.found=false

# One node: every internal topic with one replica; nothing made on first use.
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Transactions that time out are aborted within a second of their timeout,
# so the crash tests see them end soon.
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
EOF
}

grant_acls() { # what user "gateway" may do, granted as the PLAINTEXT super user
    local acl=(org.apache.kafka.tools.AclCommand --bootstrap-server "$bootstrap" --add
        --allow-principal User:gateway --force)
    run_java "${acl[@]}" --cluster --operation Describe --operation IdempotentWrite >>"$state/acl.log" 2>&1 \
        && run_java "${acl[@]}" --topic allowed- --resource-pattern-type prefixed \
            --operation Create --operation Describe --operation Write >>"$state/acl.log" 2>&1 \
        && run_java "${acl[@]}" --transactional-id allowed- --resource-pattern-type prefixed \
            --operation Describe --operation Write >>"$state/acl.log" 2>&1 \
        || { cat "$state/acl.log" >&2; die "granting the gateway user's ACLs failed"; }
}

start() {
    if running_pid >/dev/null && answers "$port"; then
        print_addresses
        return 0
    fi
    fetch_jars
    command -v java >/dev/null || die "Java 17 or newer is needed: apt-get install openjdk-17-jre-headless"
    mkdir -p "$state"
    local fresh=false
    if [ ! -f "$state/data/meta.properties" ]; then
        fresh=true
        make_pki
        write_config
        echo "formatting a new KRaft log directory in $state/data"
        run_java kafka.tools.StorageTool format --standalone -t "$(run_java kafka.tools.StorageTool random-uuid)" \
            -c "$state/server.properties" \
            --add-scram 'SCRAM-SHA-512=[name=admin,password=admin-secret]' \
            --add-scram 'SCRAM-SHA-512=[name=gateway,password=gateway-secret]' \
            >"$state/format.log" 2>&1 || { cat "$state/format.log" >&2; die "formatting the log directory failed"; }
    fi
    for p in "$port" "$sasl_port" "$controller_port" "$internal_port"; do
        answers "$p" && die "port $p is taken by another program: choose other ports with KAFKA_PORT"
    done
    local started=$SECONDS
    # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS holds several options
    nohup java ${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" -Dkafka.logs.dir="$state" \
        -cp "$lib/*" kafka.Kafka "$state/server.properties" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 600); do
        if grep -q 'Kafka Server started' "$log" 2>/dev/null && answers "$port" && answers "$sasl_port"; then
            break
        fi
        running_pid >/dev/null || { tail -n 40 "$log" >&2; die "the broker exited at start (its log: $log)"; }
        sleep 0.1
    done
    grep -q 'Kafka Server started' "$log" || { tail -n 40 "$log" >&2; die "the broker did not start within 60 s (its log: $log)"; }
    if $fresh && [ "${KAFKA_GRANT_ACLS:-1}" != 0 ]; then
        grant_acls
    fi
    echo "started in $((SECONDS - started)) s"
    print_addresses
}

case "${1:-}" in
    start) start ;;
    status)
        running_pid >/dev/null && answers "$port" || { echo "no broker answers on $bootstrap ($state)"; exit 1; }
        print_addresses
        ;;
    env)
        running_pid >/dev/null && answers "$port" || die "no broker answers on $bootstrap: run 'bash scripts/kafka.sh start'"
        echo "export KAFKA_GATEWAY_TEST_KAFKA=$bootstrap"
        echo "export KAFKA_GATEWAY_TEST_KAFKA_SASL_SSL=$sasl_bootstrap"
        echo "export KAFKA_GATEWAY_TEST_KAFKA_CA=$ca"
        ;;
    stop) stop_server "Kafka broker" TERM ;;
    kill) stop_server "Kafka broker" KILL ;;
    reset)
        stop_server "Kafka broker" TERM
        rm -rf "$state"
        echo "deleted $state"
        ;;
    java)
        shift
        [ "$#" -gt 0 ] || die "usage: $0 java CLASS [ARG...]"
        run_java "$@"
        ;;
    *)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 64
        ;;
esac
