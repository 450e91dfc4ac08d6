"""Kafka Connect (4.3.1, Kafka's own `connect-runtime` from Maven Central) in distributed mode
on a Spool broker. Spool-only: the broker settings roll segments quickly so the cleaner has
sealed segments to compact; Kafka's cleaner timing differs.

The worker keeps its state in the three internal topics it creates (`cleanup.policy=compact`,
checked by Connect itself with DescribeConfigs), joins its group through Spool's group
coordinator (classic protocol, type "connect") and serves its REST API. A source connector
(`SeqSourceConnector` in tests/clients/java) writes 0..N-1 and commits its position as a
source offset every `offset.flush.interval.ms`. Checked:
- the worker is stopped mid-way and started again: it reads its connector's config back from
  the configs topic and the task's position from the offsets topic, and goes on from there:
  every number arrives, 0 once (no restart from scratch), with at most a few repeats;
- the offsets topic really compacts: of the many offset commits written, the log keeps only
  the latest for the cleaned segments (plus those in its active segment).
"""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import JAVA_JAR, TARGET, free_port, running_broker
from test_offsets import TunedBroker

pytestmark = pytest.mark.skipif(TARGET == "kafka", reason="Spool's cleaner timing")

KAFKA_LIBS = Path(os.environ.get("KAFKA_LIBS", Path(__file__).parent / ".deps" / "kafka-libs"))
RECORDS = 3000
PER_POLL = 5
STOP_AT = 1000
WAIT_S = 120


class ConnectBroker(TunedBroker):
    settings = {"log.roll.ms": "500", "log.cleaner.backoff.ms": "200"}


@pytest.fixture(scope="module")
def cbroker():
    yield from running_broker(ConnectBroker, "connect")


class Worker:
    def __init__(self, workdir, bootstrap, group):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        props = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "config.storage.topic": f"{group}-configs",
            "offset.storage.topic": f"{group}-offsets",
            "status.storage.topic": f"{group}-status",
            "config.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "offset.storage.partitions": "1",
            "status.storage.partitions": "1",
            "offset.flush.interval.ms": "200",
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "listeners": self.url,
        }
        self.props_path = self.workdir / "worker.properties"
        self.props_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.log_path = self.workdir / "connect.log"
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1",
             "-cp", f"{KAFKA_LIBS}/*:{JAVA_JAR}",
             "org.apache.kafka.connect.cli.ConnectDistributed", str(self.props_path)],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WAIT_S
        while True:
            assert self.proc.poll() is None, f"worker exited:\n{self.log_tail()}"
            try:
                self.get("/connectors")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert time.monotonic() < deadline, f"REST never up:\n{self.log_tail()}"
            time.sleep(0.5)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def log_tail(self, n=60):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def read_partition(bootstrap, topic, partition=0):
    """[(offset, key, value)] of a partition from its start to its high watermark, and the
    high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic, partition)
        low, high = c.get_watermark_offsets(tp, timeout=15)
        c.assign([TopicPartition(topic, partition, low)])
        out = []
        deadline = time.monotonic() + 60
        while c.position([tp])[0].offset < high:
            assert time.monotonic() < deadline, f"{topic} not read to {high}"
            for m in c.consume(500, timeout=1):
                assert m.error() is None, m.error()
                if m.offset() < high:
                    out.append((m.offset(), m.key(), m.value()))
        return out, high
    finally:
        c.close()


def test_connect_distributed_resumes_from_its_compacted_offsets(cbroker, tmp_path):
    b = cbroker.bootstrap
    group = f"connect-{uuid.uuid4().hex[:6]}"
    topic = f"{group}-data"
    worker = Worker(tmp_path, b, group)
    try:
        worker.start()
        worker.post("/connectors", {"name": "seq", "config": {
            "connector.class": "dev.spool.testclient.SeqSourceConnector", "tasks.max": "1",
            "topic": topic, "records": str(RECORDS), "keys": "10", "per.poll": str(PER_POLL)}})
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                if read_partition(b, topic)[1] >= STOP_AT:
                    break
            except Exception:  # noqa: BLE001 - the topic may not exist yet
                pass
            assert time.monotonic() < deadline, f"no progress:\n{worker.log_tail()}"
            time.sleep(0.5)
        worker.stop()
        stopped_at = read_partition(b, topic)[1]
        assert stopped_at < RECORDS, "stop earlier: the resume is the point"

        worker.start()
        deadline = time.monotonic() + WAIT_S
        while True:
            values = [int(v) for _, _, v in read_partition(b, topic)[0]]
            if len(set(values)) >= RECORDS:
                break
            assert time.monotonic() < deadline, (
                f"{len(set(values))} of {RECORDS} after the restart:\n{worker.log_tail()}")
            time.sleep(0.5)
        assert sorted(set(values)) == list(range(RECORDS))
        assert values.count(0) == 1, "the restarted task started over: its offset was lost"
        repeats = len(values) - RECORDS
        assert repeats <= 100, f"{repeats} records written twice"
        status = worker.get("/connectors/seq/status")
        assert status["connector"]["state"] == "RUNNING", status
        assert all(t["state"] == "RUNNING" for t in status["tasks"]), status

        # The offsets topic compacts: of every commit written, the cleaned segments keep the
        # latest, so what remains is that one plus the few in the active segment.
        offsets_topic = f"{group}-offsets"
        deadline = time.monotonic() + WAIT_S
        while True:
            records, high = read_partition(b, offsets_topic)
            if high >= 20 and len(records) <= 6:
                break
            assert time.monotonic() < deadline, (
                f"{offsets_topic}: {len(records)} of {high} records left; broker log:\n"
                f"{cbroker.log_tail()}")
            time.sleep(0.5)
        last = json.loads(records[-1][2])
        assert last == {"next": RECORDS}, last
    finally:
        worker.stop()
