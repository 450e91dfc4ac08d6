"""Fault tests for replicated partitions (tests/test_faults.py, tests/soak.py).

  cluster.py    3-node Kafka (KRaft) and Spool clusters with kill -9, SIGSTOP/SIGCONT, restart,
                torn restart and network isolation of one node
  netfault.py   network partitions on loopback: one cgroup per node, iptables DROP rules
  workload.py   idempotent acks=all producers and continuous consumers (Java kafka-clients via
                FaultClient.java, confluent-kafka via py_client.py), probes, the final read,
                the history
  schedule.py   seeded fault cycles, then the final state and the checker
  checker.py    the safety properties, over a history
  records.py    record batch v2 segment files: parse, CRC-32C, build (for unit tests)
"""
