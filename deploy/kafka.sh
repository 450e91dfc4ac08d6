#!/usr/bin/env bash
# Run a real single-node Apache Kafka (KRaft, broker+controller in one JVM)
# for differential testing and side-by-side benchmarks.
#
#   deploy/kafka.sh fetch                 # download broker jars (idempotent)
#   deploy/kafka.sh start DIR PORT [HOST] # format DIR, start, print PID, wait until ready
#   deploy/kafka.sh stop PID              # SIGTERM that PID, SIGKILL after 30 s
#
# Jars come from Maven Central through deploy/kafka/pom.xml into
# tests/.deps/kafka-libs (override with KAFKA_LIBS). KAFKA_HEAP (default
# 1g) sets -Xmx; KAFKA_JVM_OPTS replaces the JVM options altogether (heap, GC) and
# KAFKA_EXTRA_PROPS (newline-separated key=value) is appended to server.properties, where a
# later key overrides an earlier one. The controller listens on PORT+1 on the same address.
# The broker's log goes to DIR/server.log, stdout/stderr to DIR/kafka.out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIBS="${KAFKA_LIBS:-$ROOT/tests/.deps/kafka-libs}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/kafka/pom.xml")"

fetch() {
    if [[ -f "$LIBS/.complete-$KAFKA_VERSION" ]]; then
        return 0
    fi
    rm -rf "$LIBS"
    mkdir -p "$LIBS"
    echo "kafka.sh: fetching Apache Kafka $KAFKA_VERSION jars into $LIBS" >&2
    if ! mvn -q -B -Dstyle.color=never -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$LIBS" -DincludeScope=runtime >"$LIBS/../mvn-kafka.log" 2>&1; then
        cat "$LIBS/../mvn-kafka.log" >&2
        exit 1
    fi
    touch "$LIBS/.complete-$KAFKA_VERSION"
}

start() {
    local dir="$1" port="$2" host="${3:-127.0.0.1}"
    local cport=$((port + 1))
    fetch
    mkdir -p "$dir/data"
    dir="$(cd "$dir" && pwd)"
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$host:$cport
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$cport
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.flush.interval.messages=9223372036854775807
EOF
    if [[ -n "${KAFKA_EXTRA_PROPS:-}" ]]; then
        printf '%s\n' "$KAFKA_EXTRA_PROPS" >>"$dir/server.properties"
    fi
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${KAFKA_LOG_LEVEL:-INFO}
rootLogger.appenderRef.file.ref = file
EOF
    local java_opts
    if [[ -n "${KAFKA_JVM_OPTS:-}" ]]; then
        read -r -a java_opts <<<"$KAFKA_JVM_OPTS"
    else
        java_opts=(-Xms256m "-Xmx${KAFKA_HEAP:-1g}" -XX:+UseG1GC -Djava.awt.headless=true)
    fi
    java_opts+=("-Dlog4j2.configurationFile=$dir/log4j2.properties")
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        local cluster_id
        cluster_id="$(python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
        java "${java_opts[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format \
            --cluster-id="$cluster_id" -c "$dir/server.properties" --ignore-formatted >"$dir/format.out" 2>&1 ||
            { cat "$dir/format.out" >&2; exit 1; }
    fi
    nohup java "${java_opts[@]}" -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
        >"$dir/kafka.out" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/kafka.pid"
    # Wait (bounded) for the broker port to accept connections.
    local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-90}))
    until python3 - "$host" "$port" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
s.close()
PY
    do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "kafka.sh: broker exited during startup; tail of $dir/kafka.out and server.log:" >&2
            tail -n 30 "$dir/kafka.out" "$dir/server.log" >&2 || true
            exit 1
        fi
        if ((SECONDS > deadline)); then
            echo "kafka.sh: broker did not open $host:$port in time" >&2
            kill "$pid" 2>/dev/null || true
            exit 1
        fi
        sleep 0.3
    done
    echo "$pid"
}

stop() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
}

case "${1:-}" in
fetch) fetch ;;
start) shift; [[ $# -ge 2 ]] || { echo "usage: $0 start DIR PORT [HOST]" >&2; exit 2; }; start "$@" ;;
stop) shift; [[ $# -eq 1 ]] || { echo "usage: $0 stop PID" >&2; exit 2; }; stop "$1" ;;
*) echo "usage: $0 {fetch|start DIR PORT [HOST]|stop PID}" >&2; exit 2 ;;
esac
