#!/usr/bin/env bash
# Regenerates broker/src/kafka_config_names.rs: every broker setting name of the Apache Kafka
# whose jars deploy/kafka.sh fetches (KafkaConfig's ConfigDef), so Spool accepts a Kafka user's
# server.properties and says which settings it ignores. Run after changing Kafka's version:
#
#   deploy/kafka-config-names/generate.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LIBS="${KAFKA_LIBS:-$ROOT/tests/.deps/kafka-libs}"
"$ROOT/deploy/kafka.sh" fetch >/dev/null
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
javac -d "$WORK" -cp "$LIBS/*" "$ROOT/deploy/kafka-config-names/KafkaConfigNames.java"
VERSION="$(ls "$LIBS" | sed -n 's/^kafka-clients-\(.*\)\.jar$/\1/p')"
java -cp "$LIBS/*:$WORK" KafkaConfigNames > "$WORK/names.tsv"
python3 "$ROOT/deploy/kafka-config-names/to_rust.py" "$VERSION" < "$WORK/names.tsv" \
    > "$ROOT/broker/src/kafka_config_names.rs"
echo "wrote broker/src/kafka_config_names.rs ($(wc -l < "$WORK/names.tsv") names, Kafka $VERSION)"
