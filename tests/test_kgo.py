"""franz-go's own pkg/kgo test suite (v1.22.3) against the broker.

tests/kgo/build.sh fetches github.com/twmb/franz-go from the Go module proxy and
compiles `go test -c ./pkg/kgo` once (cached in tests/.deps/bin). The binary runs
with KGO_SEEDS=<broker>, KGO_TEST_RF=1, every test except those in EXCLUDED, and
this test asserts that every one of them PASSes (a SKIP is only accepted where
the suite itself gates on a broker capability, see ALLOWED_SKIPS).

About 110 of the ~150 tests are unit tests that never dial; the rest talk to the broker
(client_test.go, consumer_test.go, group_test.go, produce_request_test.go, share_test.go,
txn_test.go). Consumer groups, classic and KIP-848, and transactions (TestTxnEtl) are
required to pass (BROKER_TESTS).
EXCLUDED are the ones that need what Spool does not have yet:

  TestShareGroup                     share groups (KIP-932; skip themselves without ShareFetch v2)
  TestShareGroupETL                  share groups
  TestShareGroupAckOnClose           share groups + FindCoordinator(share)
  TestShareGroupOffsetsAdmin         share groups admin APIs
  TestConsumeRegexShareSkipsInternal share groups with regex
  TestSCRAMAuth                      SASL/SCRAM listener (skips without KGO_TEST_SCRAM_SEEDS)
  TestSCRAMAuthBadCredentials        SASL/SCRAM listener
  TestOAuthAuth                      SASL/OAUTHBEARER listener

Validated against Apache Kafka 4.3.1 (SPOOL_TEST_TARGET=kafka): the whole suite,
excluded tests included, passes there in ~105 s (TestIssueProduceBrokerTooOldFailsRecords
skips itself because Kafka 4.x still advertises Produce v0).
"""
import os
import re
import subprocess
import time

import pytest

from conftest import ROOT

KGO_VERSION = "v1.22.3"
RUN_TIMEOUT_S = 600  # the whole binary; go's own -test.timeout is a bit shorter

EXCLUDED = {
    "TestShareGroup": "share groups",
    "TestShareGroupETL": "share groups",
    "TestShareGroupAckOnClose": "share groups",
    "TestShareGroupOffsetsAdmin": "share groups",
    "TestConsumeRegexShareSkipsInternal": "share groups",
    "TestSCRAMAuth": "SASL listener",
    "TestSCRAMAuthBadCredentials": "SASL listener",
    "TestOAuthAuth": "SASL listener",
}

# Tests that legitimately skip themselves depending on what the broker advertises.
ALLOWED_SKIPS = {
    # skips if the broker advertises Produce v0..v2 (Kafka 4.x does, Spool does not)
    "TestIssueProduceBrokerTooOldFailsRecords",
}

# The tests that must reach the broker (everything else in the run is a unit test);
# listed so a run that silently skipped or lost them would fail.
BROKER_TESTS = {
    "TestPing", "TestIssue325", "TestConsumeTopicRetrieval", "TestConsumeTopicRetrieval_Many",
    "TestIssue337", "TestDirectPartitionPurge", "TestIssue434",
    "TestAddRemovePartitions", "TestPauseIssue489", "TestPauseIssueOct2023", "TestIssue648",
    "TestIssue810", "TestIssue865", "TestIssueFetchLargerThanBrokerMaxReadBytes", "TestPooling",
    "TestHookPollStart", "TestConsumeMaxDecompressBatchBytes", "TestClient_Produce",
    "TestIssue769", "TestIssueProduceSyncManualPartitionNegativeDoesNotPanic", "TestIssue831",
    "TestClient_ProduceLargeMessages",
    # consumer groups (classic and KIP-848)
    "TestUnknownGroupOffsetFetchPinned", "TestIssue1034", "TestConsumeRegex", "TestGroupSimple",
    "TestIssue523", "Test848RegexBrokerResolves", "TestGroupETL",
    # transactions (issue 11): a transactional consume-process-produce with consumer groups,
    # classic and KIP-848, eager, cooperative and static members
    "TestTxnEtl",
}

RESULT_RE = re.compile(r"^--- (PASS|FAIL|SKIP): (\S+) \(([\d.]+)s\)")


def build_kgo_test_binary():
    try:
        out = subprocess.run([str(ROOT / "tests" / "kgo" / "build.sh")], capture_output=True,
                             text=True, timeout=900, env={**os.environ, "KGO_VERSION": KGO_VERSION})
    except subprocess.TimeoutExpired:
        pytest.fail("tests/kgo/build.sh timed out", pytrace=False)
    if out.returncode != 0:
        pytest.fail(f"tests/kgo/build.sh failed:\n{out.stderr[-4000:]}", pytrace=False)
    return out.stdout.strip().splitlines()[-1]


def test_franz_go_kgo_suite(broker, tmp_path):
    binary = build_kgo_test_binary()
    # Some tests read the package's own sources (e.g. config.go): run from there.
    pkg_dir = ROOT / "tests" / ".deps" / f"franz-go-{KGO_VERSION}" / "pkg" / "kgo"
    assert (pkg_dir / "config.go").exists(), pkg_dir
    skip_re = "^(" + "|".join(sorted(EXCLUDED)) + ")$"
    env = dict(os.environ, KGO_SEEDS=broker.bootstrap, KGO_TEST_RF="1",
               KGO_TEST_RECORDS="20000", KGO_LOG_LEVEL="none")
    cmd = [binary, "-test.v", "-test.count=1", f"-test.timeout={RUN_TIMEOUT_S - 30}s",
           f"-test.skip={skip_re}"]
    log_path = tmp_path / "kgo.log"
    start = time.monotonic()
    with open(log_path, "wb") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=pkg_dir, timeout=RUN_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    elapsed = time.monotonic() - start
    lines = log_path.read_text(errors="replace").splitlines()

    results = {}
    for line in lines:
        m = RESULT_RE.match(line)  # top-level tests only: subtests are indented
        if m:
            results[m.group(2)] = m.group(1)
    failed = sorted(t for t, r in results.items() if r == "FAIL")
    skipped = sorted(t for t, r in results.items() if r == "SKIP" and t not in ALLOWED_SKIPS)
    missing = sorted(BROKER_TESTS - results.keys())
    passed = sum(1 for r in results.values() if r == "PASS")
    print(f"kgo {KGO_VERSION}: {passed} passed, {len(failed)} failed, {len(skipped)} skipped, "
          f"{len(missing)} missing, exit {rc}, {elapsed:.0f}s")

    def failure_context(name, n=40):
        """The indented output go test prints under `=== NAME/CONT <name>` and `--- FAIL: <name>`."""
        out, grab = [], False
        for line in lines:
            if not line.startswith(" "):
                head = line.split()
                grab = len(head) >= 3 and head[0] in ("===", "---") and \
                    (head[2] == name or head[2].startswith(name + "/"))
                if grab and head[1] in ("FAIL:", "NAME", "CONT"):
                    out.append(line)
                continue
            if grab:
                out.append(line)
        return "\n".join(out[-n:])

    detail = "\n\n".join(failure_context(t) for t in failed[:15])
    tail = "\n".join(lines[-40:])
    assert not failed and not skipped and not missing and rc == 0, (
        f"franz-go kgo suite: failed={failed} unexpected-skips={skipped} missing={missing} "
        f"exit={rc}\n{detail}\n--- log tail ---\n{tail}")
    assert passed >= 100, f"only {passed} tests passed: the run is not the whole suite"
