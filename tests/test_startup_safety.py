"""Start-up mistakes are clear start-up failures, as in Apache Kafka.

- A second broker on a listener address in use fails at once, and the first keeps every
  connection (Spool's shards bind with SO_REUSEPORT, which used to let the kernel split the
  port's connections between both processes).
- A second broker on a log dir in use fails on its `.lock`.
- A log dir whose meta.properties names another node.id or cluster.id is refused.
- The port opens only when every shard is ready: once a connection succeeded during start-up,
  every later one does too.

Spool only: these drive the `spool` binary's command line and its log-dir files.
"""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import HOST, TARGET, Broker, api_round_trip, free_port, spool_bin

pytestmark = pytest.mark.skipif(TARGET != "spool", reason="drives the spool binary")

CORES = os.environ.get("SPOOL_TEST_CORES", "2")
# A refused start-up reads a few files and exits; anything near this means it started instead.
FAIL_FAST_S = 10.0


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="spool-it-startup-")
    yield Path(d)
    if os.environ.get("SPOOL_TEST_KEEP"):
        print(f"[workdir kept: {d}]")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def first(workdir):
    """A running broker in its own work dir, stopped at the end."""
    b = Broker("spool", workdir / "first")
    try:
        b.start()
        yield b
    finally:
        b.stop()


def start_refused(port, data_dir, node_id=0):
    """Runs `spool broker` that must refuse to start; returns (exit code, output, seconds)."""
    cmd = [str(spool_bin()), "broker",
           "--listeners", f"PLAINTEXT://{HOST}:{port}",
           "--log-dirs", str(data_dir),
           "--node-id", str(node_id),
           "--cores", CORES]
    started = time.monotonic()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=FAIL_FAST_S,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:  # run() has killed it
        pytest.fail(f"`{' '.join(cmd)}` started instead of failing:\n{e.stdout}\n{e.stderr}",
                    pytrace=False)
    return out.returncode, out.stdout + out.stderr, time.monotonic() - started


def fatal_line(output):
    """The one-line error of a refused start-up."""
    lines = [l for l in output.splitlines() if l.startswith("spool: fatal: ")]
    assert len(lines) == 1, output
    return lines[0]


def api_versions(port, timeout=5.0):
    """One connection, one ApiVersions v0 round trip; raises on refusal, reset or timeout."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        client_id = b"startup-safety"
        body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        correlation_id, error_code = struct.unpack(">ih", recv_exact(s, size)[:6])
        assert (correlation_id, error_code) == (7, 0)


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return data


def create_topic_cli(bootstrap, name):
    """Creates a topic from a fresh process, so over a fresh connection."""
    out = subprocess.run([str(spool_bin()), "topic", "create", "--bootstrap-server", bootstrap,
                          "--partitions", "1", name],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def topic_names(bootstrap):
    from confluent_kafka.admin import AdminClient
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def read_props(data_dir):
    props = {}
    for line in (Path(data_dir) / "meta.properties").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            props[key] = value
    return props


def write_props(data_dir, props):
    text = "".join(f"{k}={v}\n" for k, v in props.items())
    (Path(data_dir) / "meta.properties").write_text(text)


# --- the listener address ------------------------------------------------------------------------

def test_second_broker_on_same_port_fails_and_first_keeps_every_connection(first, workdir):
    other_dir = workdir / "second"
    results = {}

    def connect_and_create():
        # Overlaps the second broker's start-up: every connection must reach the first one.
        errors = []
        for i in range(50):
            try:
                api_versions(first.port)
            except OSError as e:
                errors.append(f"connect {i}: {e!r}")
        results["connect_errors"] = errors
        for i in range(50):
            create_topic_cli(first.bootstrap, f"same-port-{i}")

    worker = threading.Thread(target=connect_and_create)
    worker.start()
    rc, output, seconds = start_refused(first.port, other_dir)
    worker.join(timeout=120)
    assert not worker.is_alive()

    assert rc != 0, output
    line = fatal_line(output)
    assert f"{HOST}:{first.port} is already in use by another process" in line, line
    assert seconds < FAIL_FAST_S
    assert not (other_dir / "meta.properties").exists(), "refused before writing its log dir"

    assert results["connect_errors"] == []
    for i in range(50):
        api_versions(first.port)
    names = topic_names(first.bootstrap)
    missing = sorted({f"same-port-{i}" for i in range(50)} - names)
    assert missing == [], f"topics created elsewhere than the first broker: {missing}"
    assert first.alive()


def test_wildcard_listener_on_the_port_is_refused(first, workdir):
    # 0.0.0.0 overlaps the first broker's 127.0.0.1: the kernel would route loopback
    # connections to whichever of the two matched best.
    cmd = [str(spool_bin()), "broker", "--listeners", f"PLAINTEXT://0.0.0.0:{first.port}",
           "--advertised-listeners", f"PLAINTEXT://{first.bootstrap}",
           "--log-dirs", str(workdir / "wild"), "--cores", CORES]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=FAIL_FAST_S)
    assert out.returncode != 0
    line = fatal_line(out.stdout + out.stderr)
    assert f"0.0.0.0:{first.port} is already in use by another process" in line, line
    assert first.alive()
    api_round_trip(first.bootstrap)


# --- the log dir ---------------------------------------------------------------------------------

def test_second_broker_on_same_log_dir_fails_on_the_lock(first):
    create_topic_cli(first.bootstrap, "same-dir")
    rc, output, seconds = start_refused(free_port(), first.data_dir)
    assert rc != 0, output
    line = fatal_line(output)
    assert ".lock" in line and str(first.data_dir) in line, line
    assert seconds < FAIL_FAST_S
    assert first.alive()
    assert "same-dir" in topic_names(first.bootstrap)


@pytest.fixture
def formatted(workdir):
    """A log dir a broker (node 0) has run on and stopped; yields (broker, meta.properties)."""
    b = Broker("spool", workdir / "formatted")
    try:
        b.start()
        from confluent_kafka.admin import AdminClient
        cluster_id = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10).cluster_id
        b.stop()
        props = read_props(b.data_dir)
        assert props["version"] == "1"
        assert props["node.id"] == "0"
        assert props["cluster.id"] == cluster_id
        assert len(props["directory.id"]) == 22, props
        yield b, props
    finally:
        b.stop()


def test_log_dir_of_another_node_id_is_refused(formatted):
    b, props = formatted
    rc, output, _ = start_refused(b.port, b.data_dir, node_id=1)
    assert rc != 0
    line = fatal_line(output)
    assert "Stored node id 0 doesn't match previous node id 1 in " in line, line
    assert str(b.data_dir) in line

    write_props(b.data_dir, dict(props, **{"node.id": "7"}))
    rc, output, _ = start_refused(b.port, b.data_dir, node_id=0)
    assert rc != 0
    assert "Stored node id 7 doesn't match previous node id 0" in fatal_line(output)

    write_props(b.data_dir, props)
    b.start()  # its own identity again: starts
    assert read_props(b.data_dir) == props


def test_log_dir_of_another_cluster_is_refused(formatted):
    b, props = formatted
    write_props(b.data_dir, dict(props, **{"cluster.id": "AnotherClusterIdAAAAAA"}))
    rc, output, _ = start_refused(b.port, b.data_dir)
    assert rc != 0
    line = fatal_line(output)
    assert "Invalid cluster.id in: " in line and str(b.data_dir) in line, line
    assert f"Expected {props['cluster.id']}" in line and "but read AnotherClusterIdAAAAAA" in line


def test_log_dir_without_meta_properties_gets_one_for_its_cluster(formatted):
    b, props = formatted
    (b.data_dir / "meta.properties").unlink()  # as an older Spool left it
    b.start()
    now = read_props(b.data_dir)
    assert (now["version"], now["node.id"], now["cluster.id"]) == ("1", "0", props["cluster.id"])
    assert len(now["directory.id"]) == 22


# --- the port opens when the broker is ready -----------------------------------------------------

def test_no_refused_connection_once_one_succeeded(workdir):
    b = Broker("spool", workdir / "slow")
    b.start()
    # Thousands of partitions and no clean shutdown: start-up opens and scans each of them.
    out = subprocess.run([str(spool_bin()), "topic", "create", "--bootstrap-server", b.bootstrap,
                          "--partitions", "3000", "many"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    b.kill9()

    attempts = []  # (connected, error)
    stop = threading.Event()

    def connect_loop():
        deadline = time.monotonic() + 60
        after_first = 0
        while not stop.is_set() and time.monotonic() < deadline and after_first < 300:
            try:
                api_versions(b.port, timeout=10)
                attempts.append((True, None))
            except ConnectionRefusedError as e:
                attempts.append((False, repr(e)))
            except OSError as e:  # connected, then reset, closed or timed out
                attempts.append((True, repr(e)))
            if any(connected for connected, _ in attempts):
                after_first += 1
            time.sleep(0.002)

    looper = threading.Thread(target=connect_loop)
    looper.start()
    try:
        b.start()
        looper.join(timeout=90)
    finally:
        stop.set()
        looper.join(timeout=30)
        b.stop()
    assert not looper.is_alive()
    first_connect = next((i for i, (connected, _) in enumerate(attempts) if connected), None)
    assert first_connect is not None, attempts[-5:]
    assert first_connect > 0, "the loop should have started before the broker listened"
    later_failures = [err for _, err in attempts[first_connect:] if err is not None]
    assert later_failures == [], (f"{len(later_failures)} of {len(attempts) - first_connect} "
                                  f"attempts after the first connect failed: {later_failures[:5]}")


def test_kafka_server_properties_start_spool_and_misspellings_are_refused(workdir):
    """A Kafka user's server.properties (as a TOML file of the same names) starts Spool: the
    settings it uses apply, the Kafka ones it does not are logged as ignored with a reason; a
    misspelt name still refuses to start, naming the closest setting."""
    port = free_port()
    config = workdir / "server.toml"
    config.write_text("\n".join([
        '"num.network.threads" = "3"',
        '"num.io.threads" = "8"',
        '"socket.send.buffer.bytes" = "102400"',
        '"log.retention.hours" = "168"',
        '"log.segment.bytes" = "1073741824"',
        '"group.initial.rebalance.delay.ms" = "0"',
        '"transaction.state.log.replication.factor" = "1"',
        '"ssl.keystore.type" = "JKS"',
    ]) + "\n")
    cmd = [str(spool_bin()), "broker", "--config", str(config),
           "--listeners", f"PLAINTEXT://{HOST}:{port}", "--log-dirs", str(workdir / "data"),
           "--cores", CORES]
    log = open(workdir / "broker.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (workdir / "broker.log").read_text()
            try:
                if api_round_trip(f"{HOST}:{port}", timeout=1):
                    break
            except Exception:  # noqa: BLE001  (not listening yet)
                time.sleep(0.1)
        output = (workdir / "broker.log").read_text()
        for name in ("num.network.threads", "num.io.threads", "socket.send.buffer.bytes",
                     "ssl.keystore.type"):
            assert f"ignored setting {name}=" in output, output
        assert "thread-per-core" in output and "TLS" in output
        assert "ignored setting log.retention.hours" not in output, "hours are applied"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    config.write_text('"log.retenton.ms" = "1000"\n')
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=FAIL_FAST_S,
                         stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert fatal_line(out.stdout + out.stderr) == (
        "spool: fatal: unknown setting `log.retenton.ms`; did you mean `log.retention.ms`?")
