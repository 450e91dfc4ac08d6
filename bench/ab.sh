#!/usr/bin/env bash
# A/B benchmark of two Spool binaries on one workload, interleaved (A B A B ...) so the shared
# machine's drift hits both alike. Each round starts the binary on a fresh data directory, runs
# spool-bench on the workload and stops the broker. Prints each round and the medians:
# records/s, broker CPU seconds per GB, p99 publish, p99.9 end to end, peak RSS.
#
#   bash bench/ab.sh BIN_A BIN_B WORKLOAD.yaml [ROUNDS=3] [spool-bench run options...]
#
# e.g.  bash bench/ab.sh /tmp/spool-before target/release/spool bench/workloads/e-10mbps.yaml 3 \
#           --duration-s 30 --warmup-s 5
# Environment: AB_PORT (default 19292), AB_DIR (default /tmp/spool-ab), SPOOL_ARGS (extra broker
# arguments, e.g. "--set num.shards=1"), AB_ENV_A / AB_ENV_B (NAME=VALUE words set in the
# environment of A's / B's broker only: the same binary with two settings).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ $# -ge 3 ]] || { sed -n 2,12p "$0"; exit 2; }
a="$(realpath "$1")" b="$(realpath "$2")" workload="$(realpath "$3")"
rounds="${4:-3}"
shift $(($# < 4 ? $# : 4))
port="${AB_PORT:-19292}"
dir="${AB_DIR:-/tmp/spool-ab}"
bench="${CARGO_TARGET_DIR:-$ROOT/target}/release/spool-bench"
rm -rf "$dir"
mkdir -p "$dir"
pid=""
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true' EXIT

run_one() { # label binary round
    local label="$1" bin="$2" round="$3" data="$dir/data" vars
    shift 3
    vars="AB_ENV_$label"
    rm -rf "$data"
    # shellcheck disable=SC2086
    env ${!vars:-} "$bin" broker --listeners "PLAINTEXT://127.0.0.1:$port" --log-dirs "$data" ${SPOOL_ARGS:-} \
        >"$dir/$label-$round.log" 2>&1 &
    pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    "$bench" run --bootstrap "127.0.0.1:$port" --system spool --mode "$label" --broker-pid "$pid" \
        --workload "$workload" --quiet "$@" --out "$dir/$label-$round.json"
    kill "$pid"
    wait "$pid" || true
    pid=""
}

for ((r = 1; r <= rounds; r++)); do
    run_one A "$a" "$r" "$@"
    run_one B "$b" "$r" "$@"
done

python3 - "$dir" "$rounds" <<'PY'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def figures(path):
    r = json.load(open(path))
    gb = r["publish"]["bytes"] / 1e9
    e2e = r.get("end_to_end_latency") or {}
    return {
        "rec/s": r["publish"]["records_per_s"],
        "CPU s/GB": r["broker"]["cpu_s"] / gb if gb else float("nan"),
        "p99 pub ms": r["publish_latency"]["p99_us"] / 1000,
        "p99.9 e2e ms": e2e.get("p999_us", float("nan")) / 1000,
        "RSS MiB": r["broker"]["peak_rss_bytes"] / 2**20,
    }
cols = ["rec/s", "CPU s/GB", "p99 pub ms", "p99.9 e2e ms", "RSS MiB"]
print("round  " + "  ".join(f"{c:>13}" for c in cols))
med = {}
for label in "AB":
    rows = [figures(f"{d}/{label}-{i}.json") for i in range(1, rounds + 1)]
    for i, row in enumerate(rows, 1):
        print(f"{label}{i:<5} " + "  ".join(f"{row[c]:>13.1f}" for c in cols))
    med[label] = {c: statistics.median(row[c] for row in rows) for c in cols}
for label in "AB":
    print(f"{label} med " + "  ".join(f"{med[label][c]:>13.1f}" for c in cols))
print("B/A    " + "  ".join(f"{med['B'][c] / med['A'][c]:>13.2f}" if med['A'][c] else f"{'-':>13}" for c in cols))
PY
