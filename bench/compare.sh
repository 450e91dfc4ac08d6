#!/usr/bin/env bash
# Side-by-side benchmark: Spool and Apache Kafka on this machine, same disk, same client, one run.
#
#   bash bench/compare.sh [--smoke] [--out DIR] [--workloads "a b c d"] [--no-tools]
#
# Steps: build Spool and spool-bench (release); fetch the Apache Kafka broker and tools jars from
# Maven Central (deploy/kafka.sh); measure the machine's ceilings (loopback TCP, O_DIRECT writes
# into the data directory's disk); then for each target in turn -- Kafka with its defaults, Kafka
# with fsync parity (log.flush.interval.messages=1, i.e. flush.messages=1 on every topic), Spool
# with its defaults -- start the broker on a fresh data directory under DIR, run the workloads of
# bench/workloads/ with spool-bench, run Kafka's own kafka-producer-perf-test and
# kafka-consumer-perf-test against it, and stop it. Workload (b) runs at 50% of the rate Kafka
# (defaults) reached in (a). Finally `spool-bench report` writes DIR/report.{json,md} and SVG plots.
#
# --smoke: seconds-long runs with small sizes (CI keeps the harness working with it; its numbers
# mean nothing). Kafka's JVM settings are those of Kafka's own bin/kafka-server-start.sh.
#
# Environment: BENCH_PORT (default 19092; Kafka's controller uses +1), KAFKA_LIBS (jar dir).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

smoke=0
tools=1
out=""
workloads="a b c d"
while [[ $# -gt 0 ]]; do
    case "$1" in
    --smoke) smoke=1 ;;
    --no-tools) tools=0 ;;
    --out) out="$2"; shift ;;
    --workloads) workloads="$2"; shift ;;
    *) echo "usage: $0 [--smoke] [--out DIR] [--workloads \"a b c d\"] [--no-tools]" >&2; exit 2 ;;
    esac
    shift
done
out="${out:-$ROOT/bench/results/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
command_line="bash bench/compare.sh"
((smoke)) && command_line+=" --smoke"
[[ "$workloads" != "a b c d" ]] && command_line+=" --workloads \"$workloads\""
((tools)) || command_line+=" --no-tools"
port="${BENCH_PORT:-19092}"
bootstrap="127.0.0.1:$port"

log() { echo "compare.sh: $*" >&2; }

log "building (release)"
cargo build --release -q -p spool -p spool-bench
bench="$ROOT/target/release/spool-bench"
spool="$ROOT/target/release/spool"
deploy/kafka.sh fetch
kafka_libs="${KAFKA_LIBS:-$ROOT/tests/.deps/kafka-libs}"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)"

# Sizes: the full run, or a seconds-long smoke run.
if ((smoke)); then
    run_opts=(--duration-s 3 --warmup-s 1)
    warm_opts=(--duration-s 1 --warmup-s 0)
    c_opts=(--partitions 50)
    d_opts=(--backlog-gb 0.02)
    tool_records=20000
    ceiling_s=1
else
    run_opts=()
    warm_opts=(--duration-s 20 --warmup-s 0)
    c_opts=()
    d_opts=()
    tool_records=1000000
    ceiling_s=5
fi

log "measuring the machine's ceilings"
"$bench" ceiling --dir "$out/data/ceiling" --seconds "$ceiling_s" --out "$out/ceiling.json"
rm -rf "$out/data/ceiling"

broker_pid=""
stop_broker() {
    if [[ -n "$broker_pid" ]]; then
        if [[ "$1" == kafka ]]; then
            deploy/kafka.sh stop "$broker_pid"
        else
            kill -TERM "$broker_pid" 2>/dev/null || true
            for _ in $(seq 1 150); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$broker_pid" 2>/dev/null || true
        fi
        broker_pid=""
    fi
}
current_system=""
trap 'stop_broker "$current_system"' EXIT

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
    broker_pid="$(KAFKA_LIBS="$kafka_libs" KAFKA_EXTRA_PROPS="$extra" KAFKA_LOG_LEVEL=WARN \
        KAFKA_JVM_OPTS="-Xmx1G -Xms1G -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true" \
        deploy/kafka.sh start "$dir" "$port" | tail -n 1)"
    current_system=kafka
}

start_spool() {
    local dir="$out/data/spool"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$spool" broker --listeners "PLAINTEXT://$bootstrap" --log-dirs "$dir/data" \
        --set log.retention.check.interval.ms=10000 >"$dir/spool.log" 2>&1 &
    broker_pid=$!
    current_system=spool
    for _ in $(seq 1 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), timeout=1)" 2>/dev/null; then
            return 0
        fi
        kill -0 "$broker_pid" 2>/dev/null || { tail -n 20 "$dir/spool.log" >&2; exit 1; }
        sleep 0.1
    done
    log "spool did not open $bootstrap"
    exit 1
}

# The records/s Kafka (defaults) reached in (a), halved: the fixed rate of (b).
half_kafka_max() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(max(1000, int(r["publish"]["records_per_s"] * 0.5)))' "$1"
}

run_target() { # system mode
    local system="$1" mode="$2"
    local tag="$system-$mode"
    log "=== $tag ==="
    if [[ "$system" == kafka ]]; then start_kafka "$mode"; else start_spool; fi
    local common=(--bootstrap "$bootstrap" --system "$system" --mode "$mode" --broker-pid "$broker_pid")
    [[ "$system" == kafka ]] && common+=(--kafka-version "$kafka_version")
    # A throw-away run first: the JVM needs its JIT warm before Kafka's figures mean anything
    # (its first runs are up to 2x slower), and Spool gets the same treatment.
    "$bench" run "${common[@]}" --workload bench/workloads/a-max-throughput.yaml --quiet \
        "${warm_opts[@]}" --out "$out/data/warm-$tag.json"
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
        esac
        "$bench" run "${common[@]}" --workload "$file" "${run_opts[@]}" "${extra[@]}" \
            --out "$out/$w-$tag.json"
    done
    if ((tools)); then
        "$bench" kafka-tools "${common[@]}" --libs "$kafka_libs" --records "$tool_records" \
            --record-size 1024 --partitions 16 --out "$out/tools-$tag.json"
    fi
    stop_broker "$system"
    rm -rf "$out/data/$system-$mode" "$out/data/spool"
}

run_target kafka defaults
run_target kafka fsync
run_target spool defaults
trap - EXIT

"$bench" report --results "$out" --command "$command_line"
# The data directories are large (the catch-up backlog); the results are in the JSON.
rm -rf "$out/data"
log "report: $out/report.md"
