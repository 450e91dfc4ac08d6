#!/usr/bin/env bash
# Install everything the integration tests need. Idempotent and quick when
# everything is already in place. Caches: tests/.deps/ (gitignored), ~/.m2,
# the Go module/build caches, pip's cache.
#
#   kcat                    Debian package (apt)
#   iptables                Debian package (apt, as root): network faults of tests/test_faults.py
#   Python clients + pytest pinned below (pip)
#   Java client helper      tests/clients/java -> target/spool-java-client.jar (Maven)
#   Go client helper        tests/clients/go   -> tests/.deps/bin/spool-go-client
#   Apache Kafka jars       only with --with-kafka (or SPOOL_TEST_TARGET=kafka): deploy/kafka.sh fetch
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/tests/.deps"
mkdir -p "$DEPS/bin" "$DEPS/stamps"
START=$SECONDS

WITH_KAFKA=0
[[ "${1:-}" == "--with-kafka" || "${SPOOL_TEST_TARGET:-}" == "kafka" ]] && WITH_KAFKA=1

log() { echo "install-test-deps: $*" >&2; }

# Pinned versions (all checked to install on Python 3.11 here).
PY_PKGS=(
    "confluent-kafka==2.16.1"
    "kafka-python==2.3.3"
    "pytest==9.2.0"
    # codecs used by kafka-python (snappy via python-snappy/cramjam)
    "lz4==4.4.5"
    "python-snappy==0.7.3"
    "cramjam==2.14.0"
    "zstandard==0.25.0"
)

# Hash of a list of files, to rebuild helpers only when their sources change.
src_hash() { cat "$@" | sha256sum | cut -c1-16; }

# --- kcat (apt) ---------------------------------------------------------------
if ! command -v kcat >/dev/null 2>&1; then
    log "installing kcat (apt)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq kcat >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq kcat >/dev/null
    fi
fi

# --- iptables (apt): network partitions in tests/test_faults.py (tests/replication/netfault.py)
if ! command -v iptables >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    log "installing iptables (apt)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq iptables >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq iptables >/dev/null
    fi
fi

# --- Python packages ------------------------------------------------------------
PY="${PYTHON:-python3}"
py_stamp="$DEPS/stamps/py-$(printf '%s\n' "${PY_PKGS[@]}" | sha256sum | cut -c1-16)-$("$PY" -c 'import sys;print("%d.%d"%sys.version_info[:2])')"
if [[ ! -f "$py_stamp" ]] || ! "$PY" -c 'import confluent_kafka, kafka, pytest, snappy, lz4, zstandard' 2>/dev/null; then
    log "installing Python packages"
    "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore "${PY_PKGS[@]}" >&2
    touch "$py_stamp"
fi

# --- Java client helper (Maven fat jar) --------------------------------------------
JAVA_DIR="$ROOT/tests/clients/java"
JAR="$JAVA_DIR/target/spool-java-client.jar"
java_hash="$(src_hash "$JAVA_DIR/pom.xml" $(find "$JAVA_DIR/src" -type f | sort))"
if [[ ! -f "$JAR" || ! -f "$DEPS/stamps/java-$java_hash" ]]; then
    log "building Java client helper (Maven)"
    if ! (cd "$JAVA_DIR" && mvn -q -B -Dstyle.color=never package -DskipTests >"$DEPS/mvn-java.log" 2>&1); then
        cat "$DEPS/mvn-java.log" >&2
        exit 1
    fi
    rm -f "$DEPS"/stamps/java-*
    touch "$DEPS/stamps/java-$java_hash"
fi

# --- Go client helper (franz-go) ------------------------------------------------
GO_DIR="$ROOT/tests/clients/go"
GO_BIN="$DEPS/bin/spool-go-client"
go_hash="$(src_hash "$GO_DIR/go.mod" "$GO_DIR/go.sum" $(find "$GO_DIR" -name '*.go' | sort))"
if [[ ! -x "$GO_BIN" || ! -f "$DEPS/stamps/go-$go_hash" ]]; then
    log "building Go client helper (franz-go)"
    (cd "$GO_DIR" && GOFLAGS="${GOFLAGS:-} -mod=readonly" go build -o "$GO_BIN" . >&2)
    rm -f "$DEPS"/stamps/go-*
    touch "$DEPS/stamps/go-$go_hash"
fi

# --- Apache Kafka (optional) -------------------------------------------------------
if ((WITH_KAFKA)); then
    "$ROOT/deploy/kafka.sh" fetch
fi

log "ok ($((SECONDS - START))s)"
