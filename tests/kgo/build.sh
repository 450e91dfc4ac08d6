#!/usr/bin/env bash
# Build franz-go's own pkg/kgo test binary, for tests/test_kgo.py.
#
#   tests/kgo/build.sh            # prints the path of the test binary
#
# The source comes from the Go module proxy (go mod download: module cache, no
# git), is copied to a writable tests/.deps/franz-go-$VERSION (the module cache
# is read-only) and compiled once with `go test -c`; later calls reuse the binary.
set -euo pipefail

VERSION="${KGO_VERSION:-v1.22.3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEPS="$ROOT/tests/.deps"
SRC="$DEPS/franz-go-$VERSION"
BIN="$DEPS/bin/kgo-$VERSION.test"

if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$DEPS/bin"
if [[ ! -f "$SRC/.complete" ]]; then
    dir="$(cd /tmp && go mod download -json "github.com/twmb/franz-go@$VERSION" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error","no Dir")))')"
    rm -rf "$SRC"
    cp -r "$dir" "$SRC"
    chmod -R u+w "$SRC"
    touch "$SRC/.complete"
fi
(cd "$SRC" && go test -c -o "$BIN.tmp" ./pkg/kgo/ >&2)
mv "$BIN.tmp" "$BIN"
echo "$BIN"
