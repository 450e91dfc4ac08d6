#!/usr/bin/env bash
# Run a real single-node Apache Kafka (KRaft, broker+controller in one JVM), or a 3-node one,
# for differential testing and side-by-side benchmarks.
#
#   deploy/kafka.sh fetch                 # download broker jars (idempotent)
#   deploy/kafka.sh start DIR PORT [HOST] # format DIR, start, print PID, wait until ready
#   deploy/kafka.sh start-cluster DIR PORT [HOST]
#                                         # three nodes, each broker+controller (KRaft combined
#                                         # mode), in DIR/node-{1,2,3}; node i listens on
#                                         # PORT+2(i-1) (controller: that +1); prints the three
#                                         # PIDs on one line once all three serve
#   deploy/kafka.sh stop PID              # SIGTERM that PID, SIGKILL after 30 s
#
# A cluster's nodes share one cluster id and a 3-voter controller quorum; internal topics and
# new topics default to replication factor 3 and min.insync.replicas=2. Each node gets the JVM
# options and extra properties a single node would. If any node fails to start, the nodes
# already started are stopped (by PID) before the script fails.
#
# Jars come from Maven Central through deploy/kafka/pom.xml into
# tests/.deps/kafka-libs (override with KAFKA_LIBS). KAFKA_HEAP (default
# 1g) sets -Xmx; KAFKA_JVM_OPTS replaces the JVM options altogether (heap, GC) and
# KAFKA_EXTRA_PROPS (newline-separated key=value) is appended to server.properties, where a
# later key overrides an earlier one. The controller listens on PORT+1 on the same address.
# The broker's log goes to DIR/server.log, stdout/stderr to DIR/kafka.out (a cluster node's to
# DIR/node-N/). KAFKA_START_TIMEOUT bounds the wait for a broker to serve (default 90 s; 300 s
# per node of a cluster, three JVMs starting at once on a small machine).
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

# write_config DIR NODE_ID VOTERS HOST PORT RF MIN_ISR: server.properties and log4j2.properties
# of one node (RF and MIN_ISR: the defaults for new and internal topics).
write_config() {
    local dir="$1" node_id="$2" voters="$3" host="$4" port="$5" rf="$6" min_isr="$7"
    local cport=$((port + 1))
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$voters
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$cport
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
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
}

java_opts() { # DIR
    if [[ -n "${KAFKA_JVM_OPTS:-}" ]]; then
        read -r -a JAVA_OPTS <<<"$KAFKA_JVM_OPTS"
    else
        JAVA_OPTS=(-Xms256m "-Xmx${KAFKA_HEAP:-1g}" -XX:+UseG1GC -Djava.awt.headless=true)
    fi
    JAVA_OPTS+=("-Dlog4j2.configurationFile=$1/log4j2.properties")
}

new_cluster_id() {
    python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))'
}

# format DIR CLUSTER_ID: format the node's storage unless it already is.
format() {
    local dir="$1" cluster_id="$2"
    [[ -f "$dir/data/meta.properties" ]] && return 0
    java_opts "$dir"
    java "${JAVA_OPTS[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format \
        --cluster-id="$cluster_id" -c "$dir/server.properties" --ignore-formatted >"$dir/format.out" 2>&1 ||
        { cat "$dir/format.out" >&2; return 1; }
}

# launch DIR: start the node in the background; sets LAUNCHED_PID.
launch() {
    local dir="$1"
    java_opts "$dir"
    nohup java "${JAVA_OPTS[@]}" -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
        >"$dir/kafka.out" 2>&1 </dev/null &
    LAUNCHED_PID=$!
    echo "$LAUNCHED_PID" >"$dir/kafka.pid"
}

# wait_serving DIR HOST PORT PID TIMEOUT_S: bounded wait for the broker port to accept
# connections.
wait_serving() {
    local dir="$1" host="$2" port="$3" pid="$4"
    local deadline=$((SECONDS + $5))
    until python3 - "$host" "$port" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
s.close()
PY
    do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "kafka.sh: broker exited during startup; tail of $dir/kafka.out and server.log:" >&2
            tail -n 30 "$dir/kafka.out" "$dir/server.log" >&2 || true
            return 1
        fi
        if ((SECONDS > deadline)); then
            echo "kafka.sh: broker did not open $host:$port in time" >&2
            return 1
        fi
        sleep 0.3
    done
}

start() {
    local dir="$1" port="$2" host="${3:-127.0.0.1}"
    fetch
    mkdir -p "$dir/data"
    dir="$(cd "$dir" && pwd)"
    write_config "$dir" 1 "1@$host:$((port + 1))" "$host" "$port" 1 1
    format "$dir" "$(new_cluster_id)" || exit 1
    launch "$dir"
    local pid="$LAUNCHED_PID"
    if ! wait_serving "$dir" "$host" "$port" "$pid" "${KAFKA_START_TIMEOUT:-90}"; then
        kill "$pid" 2>/dev/null || true
        exit 1
    fi
    echo "$pid"
}

CLUSTER_NODES=3

start_cluster() {
    local dir="$1" port="$2" host="${3:-127.0.0.1}"
    fetch
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local voters="" i
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
        voters+="${voters:+,}$i@$host:$((port + 2 * (i - 1) + 1))"
    done
    local cluster_id
    cluster_id="$(new_cluster_id)"
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
        mkdir -p "$dir/node-$i/data"
        write_config "$dir/node-$i" "$i" "$voters" "$host" "$((port + 2 * (i - 1)))" 3 2
        format "$dir/node-$i" "$cluster_id" || exit 1
    done
    # The quorum needs a majority of voters up before any broker serves: start all, then wait.
    local pids=()
    stop_started() {
        local p
        for p in "${pids[@]}"; do stop "$p"; done
    }
    trap 'stop_started' INT TERM
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
        launch "$dir/node-$i"
        pids+=("$LAUNCHED_PID")
    done
    # Three JVMs starting at once on a small machine: give them longer than one.
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
        if ! wait_serving "$dir/node-$i" "$host" "$((port + 2 * (i - 1)))" "${pids[i - 1]}" \
            "${KAFKA_START_TIMEOUT:-300}"; then
            stop_started
            exit 1
        fi
    done
    trap - INT TERM
    echo "${pids[*]}"
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
start-cluster) shift; [[ $# -ge 2 ]] || { echo "usage: $0 start-cluster DIR PORT [HOST]" >&2; exit 2; }; start_cluster "$@" ;;
stop) shift; [[ $# -eq 1 ]] || { echo "usage: $0 stop PID" >&2; exit 2; }; stop "$1" ;;
*) echo "usage: $0 {fetch|start DIR PORT [HOST]|start-cluster DIR PORT [HOST]|stop PID}" >&2; exit 2 ;;
esac
