#!/usr/bin/env bash
# Run the whole test suite: install test dependencies, build the broker, run the
# Rust tests, then the integration tests (real Kafka clients against a real
# broker). This is what .ci/run executes.
#
#   deploy/test.sh [extra pytest args...]
#
# Environment:
#   SPOOL_TEST_TARGET=kafka  run the integration tests against Apache Kafka
#                            (deploy/kafka.sh) instead of Spool
#   SPOOL_SKIP_CARGO=1       skip `cargo build` / `cargo test` (e.g. with kafka)
#
# The last line printed is pytest's summary line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONDONTWRITEBYTECODE=1

declare -a SUMMARY=()
step_start=0
begin() { step_start=$SECONDS; echo; echo "=== $* ==="; }
done_step() { SUMMARY+=("$(printf '%-34s %-6s %4ss' "$1" "$2" "$((SECONDS - step_start))")"); }

begin "install test dependencies"
deploy/install-test-deps.sh
done_step "install-test-deps" ok

cargo_failed=0
if [[ "${SPOOL_SKIP_CARGO:-0}" != "1" ]]; then
    begin "cargo build --release"
    # Every target, as `cargo test` builds them: dev-dependencies change the features of shared
    # crates, so a plain `cargo build` and `cargo test` would each compile the whole graph.
    if cargo build --release --workspace --all-targets; then
        done_step "cargo build --release" ok
    else
        done_step "cargo build --release" FAILED
        printf '%s\n' "" "=== summary ===" "${SUMMARY[@]}"
        echo "cargo build --release failed; integration tests not run"
        exit 1
    fi

    begin "cargo test --workspace --release"
    if cargo test --workspace --release; then
        done_step "cargo test --workspace --release" ok
    else
        done_step "cargo test --workspace --release" FAILED
        cargo_failed=1
    fi
fi

begin "pytest tests/ (target: ${SPOOL_TEST_TARGET:-spool})"
PYLOG="$(mktemp /tmp/spool-pytest.XXXXXX.log)"
set +e
python3 -m pytest -q -p no:cacheprovider --durations=20 tests/ "$@" 2>&1 | tee "$PYLOG"
py_rc=${PIPESTATUS[0]}
set -e
if ((py_rc == 0)); then
    done_step "pytest tests/" ok
elif ((py_rc == 5)); then
    done_step "pytest tests/" "NO TESTS"
else
    done_step "pytest tests/" FAILED
fi

printf '%s\n' "" "=== summary ===" "${SUMMARY[@]}"
last="$(grep -E '^=*\s*[0-9]+ (passed|failed|error|errors|skipped|deselected)|no tests ran' "$PYLOG" | tail -n 1 || true)"
rm -f "$PYLOG"
rc=0
((cargo_failed)) && { echo "cargo test FAILED (see above)"; rc=1; }
((py_rc == 5)) && { echo "pytest collected no tests: treated as failure"; rc=1; }
((py_rc != 0 && py_rc != 5)) && rc=$py_rc
# pytest's own summary line goes last.
echo "${last:-pytest printed no summary line (exit $py_rc)}"
exit "$rc"
