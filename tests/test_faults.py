"""Replicated partitions (RF=3, min.insync.replicas=2) under faults, checked for safety.

A 3-node cluster (Spool by default; Apache Kafka with SPOOL_TEST_TARGET=kafka, which is how
the harness itself is validated) runs a workload of idempotent acks=all producers (Java
kafka-clients and confluent-kafka/librdkafka, two producers each) and two continuous consumers
(one per client), while a seeded schedule injects one fault at a time: kill -9, SIGSTOP,
clean restart, kill -9 with a torn segment tail, and network partitions of a node from its
peers (and from clients too) via iptables. After each fault: writable again (acks=all on every
partition) within 30 s, and every replica back in sync before the next. At the end the
checker (tests/replication/checker.py) proves: every acknowledged record read back exactly once
at its acknowledged offset; no offset ever held two values (acks, every consumer's reads, the
final read, every replica's log); nothing a consumer saw disappeared; offsets only grow per
consumer; every replica's log below the high watermark byte-identical to the leader's.

  SPOOL_FAULT_CYCLES (default 20)   cycles
  SPOOL_FAULT_SEED                  replay a seed (printed at the start and on failure)
  SPOOL_FAULT_HOLD (default 2)      seconds each fault stays in place
  SPOOL_FAULT_SET                   extra `--set key=value ...` for the Spool nodes
  SPOOL_TEST_KEEP=1                 keep the cluster's work dir (kept anyway on failure)
Network faults need root, iptables and a cgroup2 mount; without them they are left out
(printed). For many more cycles and a report: tests/soak.py.
"""
import os
import sys

import pytest

from conftest import TARGET
from replication.cluster import make_cluster
from replication.schedule import Settings, run

CYCLES = int(os.environ.get("SPOOL_FAULT_CYCLES", "20"))
SEED = os.environ.get("SPOOL_FAULT_SEED")
HOLD = float(os.environ.get("SPOOL_FAULT_HOLD", "2"))


@pytest.fixture
def fault_cluster():
    c = make_cluster(TARGET)
    c.passed = False  # set by the test as its last step
    try:
        c.start()
        yield c
    finally:
        keep = not c.passed or bool(os.environ.get("SPOOL_TEST_KEEP"))
        if keep:
            sys.stderr.write(f"[fault cluster work dir kept: {c.workdir}]\n")
        c.close(keep=keep)


def test_replicated_partitions_keep_acknowledged_data_through_faults(fault_cluster):
    s = Settings(cycles=CYCLES, seed=int(SEED) if SEED else None, hold=HOLD, heal_bound=30.0,
                 converge_bound=90.0, rate=50.0, java_producers=2, py_producers=2,
                 clients=("java", "confluent"), max_seconds=CYCLES * 60.0 + 600)
    h, report = run(fault_cluster, s)
    print(report.summary())
    assert len(h.cycles) == CYCLES, (
        f"seed {h.seed}: schedule stopped after {len(h.cycles)} cycles: {h.notes}\n"
        f"{report.summary()}")
    assert report.ok, f"seed {h.seed} (replay: SPOOL_FAULT_SEED={h.seed}):\n{report.summary()}"
    # The run did something: records were acknowledged and read while faults happened.
    assert report.stats["acked"] > CYCLES * 50
    assert all(n > 0 for n in report.stats["consumer_reads"].values())
    fault_cluster.passed = True
