#!/usr/bin/env bash
# A local 3-node Spool cluster in one command (every node broker + controller, on 127.0.0.1,
# configs in deploy/cluster/node-{1,2,3}.toml, data in ./spool-cluster/).
#
#   deploy/cluster.sh start    # build if needed, start the three nodes, wait until all serve
#   deploy/cluster.sh status   # spool cluster status
#   deploy/cluster.sh stop     # SIGTERM the three nodes (by the PIDs this script recorded)
#
# Clients bootstrap from 127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${SPOOL_BIN:-$ROOT/target/release/spool}"
STATE="$ROOT/spool-cluster"
BOOTSTRAP="127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"

start() {
    [[ -x "$BIN" ]] || cargo build --release -p spool
    mkdir -p "$STATE"
    for i in 1 2 3; do
        if [[ -f "$STATE/node-$i.pid" ]] && kill -0 "$(cat "$STATE/node-$i.pid")" 2>/dev/null; then
            echo "node $i already running (pid $(cat "$STATE/node-$i.pid"))"
            continue
        fi
        "$BIN" broker --config "deploy/cluster/node-$i.toml" >>"$STATE/node-$i.log" 2>&1 &
        echo $! >"$STATE/node-$i.pid"
    done
    for i in 1 2 3; do
        for _ in $(seq 1 600); do
            if (exec 3<>"/dev/tcp/127.0.0.1/${i}9092") 2>/dev/null; then
                break
            fi
            if ! kill -0 "$(cat "$STATE/node-$i.pid")" 2>/dev/null; then
                echo "node $i exited; see $STATE/node-$i.log" >&2
                tail -n 20 "$STATE/node-$i.log" >&2
                exit 1
            fi
            sleep 0.1
        done
    done
    echo "spool cluster up: bootstrap $BOOTSTRAP"
    "$BIN" cluster status --bootstrap-server 127.0.0.1:19092
}

stop() {
    for i in 1 2 3; do
        local pidfile="$STATE/node-$i.pid"
        [[ -f "$pidfile" ]] || continue
        local pid
        pid="$(cat "$pidfile")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        rm -f "$pidfile"
    done
    echo "spool cluster stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) "$BIN" cluster status --bootstrap-server 127.0.0.1:19092 ;;
    *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
