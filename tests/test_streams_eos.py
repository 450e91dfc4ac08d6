"""Kafka Streams (4.3.1, from Maven Central) with processing.guarantee=exactly_once_v2 against
the broker: a sum per key through a repartition topic and a changelog-backed store
(tests/clients/java/.../StreamsSum.java), its instance killed with SIGKILL twice mid-run.

The checker reads the output with read_committed: every key's output is exactly the prefix
sums of its inputs, each once and in order (with the record cache off, every input record yields
one output), and the last one is the key's total. A duplicate after a crash (an input counted
twice), a gap (an input lost) or an aborted write becoming visible would each break it.
Every wait is bounded; processes are signalled only by their own PID.
"""
import json
import signal
import subprocess
import time

import pytest

from conftest import helper_cmd
from test_transactions import lines, new_topic, consume_committed  # noqa: F401

KEYS = 6
PER_KEY = 300


def produce_inputs(bootstrap, topic, start, count):
    """Inputs start..start+count of every key, "k<j>:<i+1>", idempotent producer."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(start, start + count):
        for j in range(KEYS):
            p.produce(topic, value=f"k{j}:{i + 1}".encode(), key=f"src{i % 4}".encode())
    assert p.flush(30) == 0


def start_app(bootstrap, tmp_path, tag):
    err = open(tmp_path / f"streams-{tag}.err", "w")
    return subprocess.Popen(
        helper_cmd("java") + ["streams-sum", "--bootstrap", bootstrap, "--in", "sums-in",
                              "--out", "sums-out", "--app-id", "eos-sum",
                              "--state-dir", str(tmp_path / f"state-{tag}")],
        stdout=subprocess.DEVNULL, stderr=err)


def outputs(bootstrap):
    out = subprocess.run(helper_cmd("java") + ["txn-consume", "--bootstrap", bootstrap,
                                               "--topic", "sums-out", "--partitions", "4",
                                               "--idle-ms", "3000"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return [(r["key"], int(r["value"])) for r in lines(out.stdout)]


def test_streams_exactly_once_survives_kill9(broker, tmp_path):
    b = broker.bootstrap
    new_topic(b, "sums-in", 4)
    new_topic(b, "sums-out", 4)
    expected_total = PER_KEY * (PER_KEY + 1) // 2
    apps = []
    try:
        # Three rounds: inputs arrive while an instance runs, then it is killed with SIGKILL
        # (its open transaction is left to the coordinator) and a new one takes over, with a
        # fresh state dir so it must restore the store from the changelog.
        for round_ in range(3):
            app = start_app(b, tmp_path, round_)
            apps.append(app)
            time.sleep(4)
            produce_inputs(b, "sums-in", round_ * 100, 100)
            time.sleep(3)
            if round_ < 2:
                app.send_signal(signal.SIGKILL)
                app.wait(timeout=30)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            got = outputs(b)
            last = {}
            for k, v in got:
                last[k] = v
            if len(last) == KEYS and all(v == expected_total for v in last.values()):
                break
            time.sleep(2)
    finally:
        for app in apps:
            if app.poll() is None:
                app.send_signal(signal.SIGTERM)
                try:
                    app.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    app.kill()
                    app.wait(timeout=10)
    per_key = {}
    for k, v in got:
        per_key.setdefault(k, []).append(v)
    assert sorted(per_key) == [f"k{j}" for j in range(KEYS)], sorted(per_key)
    for k, sums in per_key.items():
        # Each output adds one input to the previous sum: the steps are the key's inputs
        # (1..PER_KEY, in the order the repartition topic interleaved them), each exactly once.
        steps = [b - a for a, b in zip([0] + sums, sums)]
        assert sorted(steps) == list(range(1, PER_KEY + 1)), (
            f"{k}: {len(sums)} outputs, steps not 1..{PER_KEY} once each: "
            f"missing {sorted(set(range(1, PER_KEY + 1)) - set(steps))[:5]}, "
            f"extra {sorted(s for s in steps if steps.count(s) > 1 or s > PER_KEY or s < 1)[:5]}\n"
            + (tmp_path / "streams-2.err").read_text()[-2000:])
