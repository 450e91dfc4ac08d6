#!/usr/bin/env bash
# Side-by-side benchmark: Spool and Apache Kafka on this machine, same disk, same client, one run.
#
#   bash bench/compare.sh [--smoke] [--brokers 1|3] [--out DIR] [--workloads "a b c d e f"] [--no-tools]
#                         [--no-build]
#
# Steps: build Spool and spool-bench (release); fetch the Apache Kafka broker and tools jars from
# Maven Central (deploy/kafka.sh); measure the machine's ceilings (loopback TCP, O_DIRECT writes
# into the data directory's disk); then for each target in turn -- Kafka with its defaults, Spool
# with its defaults, Kafka with fsync parity (log.flush.interval.messages=1, i.e.
# flush.messages=1 on every topic) -- start the broker on a fresh data directory under DIR, run the workloads of
# bench/workloads/ with spool-bench, run Kafka's own kafka-producer-perf-test and
# kafka-consumer-perf-test against it, and stop it. Workload (b) runs at 50% of the rate Kafka
# (defaults) reached in (a). Finally `spool-bench report` writes DIR/report.{json,md} and SVG plots.
#
# --smoke: seconds-long runs with small sizes (CI keeps the harness working with it; its numbers
# mean nothing). Kafka's JVM settings are those of Kafka's own bin/kafka-server-start.sh.
#
# --brokers 3: the same, with each target a 3-broker cluster on this machine: three Spool
# processes (each broker and controller, one shard per core each) against three Apache Kafka
# brokers (KRaft combined broker+controller, deploy/kafka.sh start-cluster, each with the JVM
# settings above). Topics are created with replication factor 3 and min.insync.replicas=2 and
# written with acks=all by the same client, which sends each partition's batches to its leader
# and fetches from it. Spool fsyncs on every replica before it acknowledges; Kafka acknowledges
# once the in-sync replicas hold the batch in their page cache ("Kafka") or, with fsync parity,
# once each replica has flushed it (flush.messages=1 on every broker, the leader flushing before
# the followers fetch). CPU, RSS and disk figures are summed over the three processes. Topics
# keep 256 MiB per partition (three copies), and (d)'s backlog is 1 GiB.
#
# Environment: BENCH_PORT (default 19092; Kafka's controller uses +1; with --brokers 3 Kafka's
# node i uses BENCH_PORT+2(i-1) and the port after it, Spool's the same 10 ports higher), KAFKA_LIBS (jar dir), CARGO_TARGET_DIR (where
# the release binaries are built), SPOOL_BIN (the spool binary, default the one built).
# --no-build uses the binaries already there instead of building them first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

smoke=0
tools=1
brokers=1
build=1
out=""
workloads="a b c d e f"
while [[ $# -gt 0 ]]; do
    case "$1" in
    --smoke) smoke=1 ;;
    --no-tools) tools=0 ;;
    --out) out="$2"; shift ;;
    --workloads) workloads="$2"; shift ;;
    --brokers) brokers="$2"; shift ;;
    --no-build) build=0 ;;
    *) echo "usage: $0 [--smoke] [--brokers 1|3] [--out DIR] [--workloads \"a b c d e f\"] [--no-tools] [--no-build]" >&2; exit 2 ;;
    esac
    shift
done
if [[ "$brokers" != 1 && "$brokers" != 3 ]]; then
    echo "$0: --brokers is 1 or 3" >&2
    exit 2
fi
out="${out:-$ROOT/bench/results/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
command_line="bash bench/compare.sh"
((smoke)) && command_line+=" --smoke"
((brokers > 1)) && command_line+=" --brokers $brokers"
[[ "$workloads" != "a b c d e f" ]] && command_line+=" --workloads \"$workloads\""
((tools)) || command_line+=" --no-tools"
base_port="${BENCH_PORT:-19092}"
port="$base_port"
bootstrap=""
# use_ports SYSTEM: the ports (port, bootstrap) of SYSTEM's brokers. A 3-broker Spool uses the
# ports 10 above Kafka's: Kafka's controller connections leave TIME_WAIT sockets on its ports
# that Spool's RPC listener cannot bind over.
use_ports() {
    port="$base_port"
    ((brokers > 1)) && [[ "$1" == spool ]] && port=$((base_port + 10))
    bootstrap="127.0.0.1:$port"
    local i
    for ((i = 2; i <= brokers; i++)); do
        bootstrap+=",127.0.0.1:$((port + 2 * (i - 1)))"
    done
}

log() { echo "compare.sh: $*" >&2; }

if ((build)); then
    log "building (release)"
    cargo build --release -q -p spool -p spool-bench
fi
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
bench="$target_dir/release/spool-bench"
spool="${SPOOL_BIN:-$target_dir/release/spool}"
deploy/kafka.sh fetch
kafka_libs="${KAFKA_LIBS:-$ROOT/tests/.deps/kafka-libs}"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)"

# Sizes: the full run, or a seconds-long smoke run.
if ((smoke)); then
    run_opts=(--duration-s 3 --warmup-s 1)
    warm_opts=(--duration-s 1 --warmup-s 0)
    c_opts=(--partitions 50)
    d_opts=(--backlog-gb 0.02)
    f_opts=(--partitions 200)
    tool_records=20000
    ceiling_s=1
else
    run_opts=()
    warm_opts=(--duration-s 20 --warmup-s 0)
    c_opts=()
    d_opts=()
    f_opts=()
    ((brokers > 1)) && d_opts=(--backlog-gb 1)
    tool_records=1000000
    ceiling_s=5
fi
# What every workload and tools run gets on top: the cluster's topic settings.
topic_opts=()
if ((brokers > 1)); then
    topic_opts=(--replication-factor 3 --topic-config min.insync.replicas=2)
    # Three copies of each partition: keep less of each so a max-rate minute fits the disk.
    run_topic_opts=("${topic_opts[@]}" --retention-bytes $((256 << 20)) --segment-bytes $((64 << 20)))
else
    run_topic_opts=()
fi

log "measuring the machine's ceilings"
"$bench" ceiling --dir "$out/data/ceiling" --seconds "$ceiling_s" --out "$out/ceiling.json"
rm -rf "$out/data/ceiling"

# Every broker process this script started and has not stopped yet.
broker_pids=()
stop_pid() { # PID: SIGTERM, SIGKILL after 30 s (Kafka and Spool alike)
    deploy/kafka.sh stop "$1"
}
stop_brokers() {
    local pid
    for pid in "${broker_pids[@]}"; do stop_pid "$pid"; done
    broker_pids=()
    # A Kafka cluster whose start-up was interrupted: its nodes recorded their PIDs; stop the
    # ones that are still that Kafka (a PID may have been reused since).
    if [[ -n "$kafka_dir" ]]; then
        local f
        for f in "$kafka_dir"/kafka.pid "$kafka_dir"/node-*/kafka.pid; do
            [[ -f "$f" ]] || continue
            pid="$(cat "$f")"
            if grep -qs "$(dirname "$f")/server.properties" "/proc/$pid/cmdline"; then
                stop_pid "$pid"
            fi
            rm -f "$f"
        done
        kafka_dir=""
    fi
}
kafka_dir=""
trap 'stop_brokers' EXIT
trap 'exit 130' INT TERM

start_kafka() { # mode
    local dir="$out/data/kafka-$1"
    rm -rf "$dir"
    # deploy/kafka.sh tunes Kafka for fast tests; put back Kafka's defaults where it differs, so
    # both brokers run as shipped (Spool uses the same defaults).
    # Disk: a max-rate minute is ~30 GB. Topics get retention.bytes from spool-bench, and both
    # brokers check retention every 10 s and delete files 1 s after (Kafka: 5 min and 60 s).
    local extra="offsets.topic.num.partitions=50
group.initial.rebalance.delay.ms=3000
log.retention.check.interval.ms=10000
log.segment.delete.delay.ms=1000"
    [[ "$1" == fsync ]] && extra+="
log.flush.interval.messages=1"
    # Kafka's own bin/kafka-server-start.sh heap and bin/kafka-run-class.sh GC settings.
    local how=start
    ((brokers > 1)) && how=start-cluster
    kafka_dir="$dir"
    local pids
    pids="$(KAFKA_LIBS="$kafka_libs" KAFKA_EXTRA_PROPS="$extra" KAFKA_LOG_LEVEL=WARN \
        KAFKA_JVM_OPTS="-Xmx1G -Xms1G -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true" \
        deploy/kafka.sh "$how" "$dir" "$port" | tail -n 1)"
    read -r -a broker_pids <<<"$pids"
}

start_spool() {
    local dir="$out/data/spool"
    rm -rf "$dir"
    mkdir -p "$dir"
    if ((brokers == 1)); then
        "$spool" broker --listeners "PLAINTEXT://$bootstrap" --log-dirs "$dir/data" \
            --set log.retention.check.interval.ms=10000 >"$dir/spool.log" 2>&1 &
        broker_pids=($!)
    else
        # As deploy/cluster.sh: every node broker and controller, Spool's defaults otherwise.
        local voters="" i
        for ((i = 1; i <= brokers; i++)); do
            voters+="${voters:+,}$i@127.0.0.1:$((port + 2 * (i - 1) + 1))"
        done
        for ((i = 1; i <= brokers; i++)); do
            local p=$((port + 2 * (i - 1)))
            "$spool" broker --node-id "$i" \
                --listeners "PLAINTEXT://127.0.0.1:$p,CONTROLLER://127.0.0.1:$((p + 1))" \
                --advertised-listeners "PLAINTEXT://127.0.0.1:$p" --log-dirs "$dir/node-$i" \
                --set process.roles=broker,controller --set controller.quorum.voters="$voters" \
                --set controller.listener.names=CONTROLLER \
                --set default.replication.factor=3 \
                --set log.retention.check.interval.ms=10000 >"$dir/spool-$i.log" 2>&1 &
            broker_pids+=($!)
        done
    fi
    local i=0 pid
    for pid in "${broker_pids[@]}"; do
        local p=$((port + 2 * i))
        i=$((i + 1))
        local up=0
        for _ in $(seq 1 300); do
            if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $p), timeout=1)" 2>/dev/null; then
                up=1
                break
            fi
            kill -0 "$pid" 2>/dev/null || { tail -n 20 "$dir"/spool*.log >&2; exit 1; }
            sleep 0.1
        done
        ((up)) || { log "spool did not open 127.0.0.1:$p"; exit 1; }
    done
}

# The records/s Kafka (defaults) reached in (a), halved: the fixed rate of (b).
half_kafka_max() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(max(1000, int(r["publish"]["records_per_s"] * 0.5)))' "$1"
}

run_target() { # system mode
    local system="$1" mode="$2"
    local tag="$system-$mode"
    log "=== $tag ==="
    use_ports "$system"
    if [[ "$system" == kafka ]]; then start_kafka "$mode"; else start_spool; fi
    local common=(--bootstrap "$bootstrap" --system "$system" --mode "$mode" --brokers "$brokers")
    local pid
    for pid in "${broker_pids[@]}"; do common+=(--broker-pid "$pid"); done
    [[ "$system" == kafka ]] && common+=(--kafka-version "$kafka_version")
    # A throw-away run first: the JVM needs its JIT warm before Kafka's figures mean anything
    # (its first runs are up to 2x slower), and Spool gets the same treatment.
    "$bench" run "${common[@]}" --workload bench/workloads/a-max-throughput.yaml --quiet \
        "${warm_opts[@]}" "${run_topic_opts[@]}" --out "$out/data/warm-$tag.json"
    for w in $workloads; do
        local file extra=()
        file="$(ls bench/workloads/"$w"-*.yaml)"
        case "$w" in
        b)
            local a_result="$out/a-kafka-defaults.json"
            if [[ ! -f "$a_result" ]]; then
                log "(b) needs Kafka's (a) result from this run; run workloads a and b together"
                exit 1
            fi
            extra=(--rate "$(half_kafka_max "$a_result")")
            ;;
        c) extra=("${c_opts[@]}") ;;
        d) extra=("${d_opts[@]}") ;;
        f) extra=("${f_opts[@]}") ;;
        esac
        "$bench" run "${common[@]}" --workload "$file" "${run_opts[@]}" "${extra[@]}" \
            "${run_topic_opts[@]}" --out "$out/$w-$tag.json"
    done
    if ((tools)); then
        "$bench" kafka-tools "${common[@]}" --libs "$kafka_libs" --records "$tool_records" \
            --record-size 1024 --partitions 16 "${topic_opts[@]}" --out "$out/tools-$tag.json"
    fi
    stop_brokers
    rm -rf "$out/data/$system-$mode" "$out/data/spool"
}

# Kafka (defaults) first: (b) runs at half its (a) rate.
run_target kafka defaults
run_target spool defaults
run_target kafka fsync
trap - EXIT INT TERM

"$bench" report --results "$out" --command "$command_line"
# The data directories are large (the catch-up backlog); the results are in the JSON.
rm -rf "$out/data"
log "report: $out/report.md"
