"""Shared fixtures for Spool's integration tests.

The tests drive a real broker process with real, unmodified Kafka clients.

Target selection (environment):
  SPOOL_TEST_TARGET=spool (default)  run target/release/spool (or $SPOOL_BIN)
  SPOOL_TEST_TARGET=kafka            run Apache Kafka via deploy/kafka.sh instead,
                                     to validate the tests themselves / diff behaviour.
Other knobs:
  SPOOL_BIN            path of the spool binary (default target/release/spool)
  SPOOL_TEST_CORES     --cores for spool (default 2)
  SPOOL_TEST_ARGS      extra arguments appended to the spool command line
  SPOOL_TEST_KEEP      keep broker data/log directories after the run

Nothing here builds anything: deploy/install-test-deps.sh and cargo do that.
Processes are only ever signalled by their own PID; every wait is bounded.
"""
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
DEPS = TESTS / ".deps"
TARGET = os.environ.get("SPOOL_TEST_TARGET", "spool").strip().lower()
HOST = "127.0.0.1"

START_TIMEOUT = float(os.environ.get("SPOOL_TEST_START_TIMEOUT", "90" if TARGET == "kafka" else "30"))
STOP_TIMEOUT = 30.0


def free_ports(n, host=HOST):
    """n distinct currently free TCP ports on host. The sockets are held until all are
    picked: `free_port` called n times can hand out one port twice (each socket is closed
    before the next bind), and two brokers on one port would share it through SO_REUSEPORT."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            sockets.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port(host=HOST, need_next=False):
    """A currently free TCP port on host (and port+1 too when need_next)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        if not need_next:
            return port
        with socket.socket() as s2:
            try:
                s2.bind((host, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def port_open(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists": reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    return True


def thread_states(pid):
    """Each thread's name, state and kernel wait (wchan, and the kernel stack when readable):
    what a process that does not react to a signal is stuck in."""
    out = []
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as e:
        return f"  (no /proc/{pid}/task: {e})"
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/stat") as f:
                stat = f.read()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            state = stat[stat.rindex(")") + 2:].split()[0]
            with open(f"{base}/wchan") as f:
                wchan = f.read().strip() or "-"
        except OSError:
            continue
        line = f"  {tid} {name} {state} {wchan}"
        if state == "D":
            try:
                with open(f"{base}/stack") as f:
                    line += "\n    " + f.read().strip().replace("\n", "\n    ")
            except OSError:
                pass
        out.append(line)
    return "\n".join(out)


def api_round_trip(bootstrap, timeout=5.0):
    """ApiVersions + Metadata round trip through a real client (librdkafka)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000)})
    md = admin.list_topics(timeout=timeout)
    return md.brokers


def spool_bin():
    b = os.environ.get("SPOOL_BIN")
    path = Path(b) if b else ROOT / "target" / "release" / "spool"
    return path


class Broker:
    """One broker process (Spool or Apache Kafka) on 127.0.0.1."""

    def __init__(self, kind, workdir):
        self.kind = kind
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port(need_next=(kind == "kafka"))
        self.bootstrap = f"{self.host}:{self.port}"
        self.pid = None
        self._proc = None
        self.log_path = self.workdir / ("spool.log" if kind == "spool" else "kafka.out")

    # -- lifecycle ---------------------------------------------------------
    def start(self):
        if self.kind == "spool":
            self._start_spool()
        else:
            self._start_kafka()
        self.wait_ready()
        return self

    def _start_spool(self):
        binary = spool_bin()
        if not binary.exists():
            pytest.fail(f"spool binary not found at {binary} (build with `cargo build --release` "
                        f"or set SPOOL_BIN)", pytrace=False)
        cmd = [str(binary), "broker",
               "--listeners", f"PLAINTEXT://{self.bootstrap}",
               "--advertised-listeners", f"PLAINTEXT://{self.bootstrap}",
               "--log-dirs", str(self.data_dir),
               "--node-id", "0",
               "--cores", os.environ.get("SPOOL_TEST_CORES", "2")]
        cmd += shlex.split(os.environ.get("SPOOL_TEST_ARGS", ""))
        self.cmd = cmd
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        log = open(self.log_path, "ab")
        log.write(("\n=== start: " + shlex.join(cmd) + "\n").encode())
        log.flush()
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, cwd=self.workdir)
        log.close()
        self.pid = self._proc.pid

    def _start_kafka(self):
        out = subprocess.run([str(ROOT / "deploy" / "kafka.sh"), "start", str(self.workdir),
                              str(self.port), self.host],
                             capture_output=True, text=True, timeout=START_TIMEOUT + 120)
        if out.returncode != 0:
            pytest.fail(f"deploy/kafka.sh start failed:\n{out.stdout}\n{out.stderr}", pytrace=False)
        self.pid = int(out.stdout.strip().splitlines()[-1])
        self._proc = None

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(f"{self.kind} exited during startup; log tail:\n{self.log_tail()}",
                            pytrace=False)
            if port_open(self.host, self.port):
                try:
                    api_round_trip(self.bootstrap, timeout=3)
                    return
                except Exception as e:  # noqa: BLE001
                    last = e
            time.sleep(0.2)
        pytest.fail(f"{self.kind} not ready on {self.bootstrap} after {timeout}s "
                    f"(last error: {last}); log tail:\n{self.log_tail()}", pytrace=False)

    def alive(self):
        if self.pid is None:
            return False
        if self._proc is not None:
            return self._proc.poll() is None
        return pid_alive(self.pid)

    def _wait_exit(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.05)
        return False

    def _signal(self, sig):
        if self.pid is not None and self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait (bounded), SIGKILL if it did not exit. Returns the exit code if known."""
        if self.pid is None:
            return None
        self._signal(signal.SIGTERM)
        if not self._wait_exit(timeout):
            sys.stderr.write(f"[{self.kind} pid {self.pid} ignored SIGTERM for {timeout:.0f} s; "
                             f"its threads:\n{thread_states(self.pid)}]\n")
            self._signal(signal.SIGKILL)
            if not self._wait_exit(10):
                sys.stderr.write(f"[{self.kind} pid {self.pid} still alive 10 s after SIGKILL; "
                                 f"its threads:\n{thread_states(self.pid)}]\n")
        rc = self._proc.returncode if self._proc is not None else None
        self.pid = None
        self._proc = None
        return rc

    def kill9(self):
        if self.pid is None:
            return
        self._signal(signal.SIGKILL)
        if not self._wait_exit(10):
            sys.stderr.write(f"[{self.kind} pid {self.pid} still alive 10 s after SIGKILL; "
                             f"its threads:\n{thread_states(self.pid)}]\n")
        self.pid = None
        self._proc = None
        # No wait for the port: a killed broker's io_uring closes its listening socket only
        # after the process is reaped, and a start at once must wait that out itself, as it
        # must for a supervisor (`net::exclusive::ensure_unused`).

    def restart(self):
        """Stop (SIGTERM) if running, then start again on the same port and data dir."""
        if self.pid is not None:
            self.stop()
        deadline = time.monotonic() + 10
        while port_open(self.host, self.port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.start()

    def log_tail(self, n=60):
        paths = [self.log_path]
        if self.kind == "kafka":
            paths.append(self.workdir / "server.log")
        out = []
        for p in paths:
            try:
                lines = p.read_text(errors="replace").splitlines()
                if p.name == "server.log":  # Kafka's INFO chatter is not useful here
                    lines = [l for l in lines if " WARN " in l or " ERROR " in l]
                out.append(f"--- {p} ---\n" + "\n".join(lines[-n:]))
            except OSError:
                pass
        return "\n".join(out)


def make_broker(tmp_root):
    if TARGET not in ("spool", "kafka"):
        pytest.fail(f"SPOOL_TEST_TARGET must be 'spool' or 'kafka', not {TARGET!r}", pytrace=False)
    b = Broker(TARGET, tmp_root)
    try:
        return b.start()
    except BaseException:
        b.stop(timeout=10)  # never leave a half-started broker behind
        raise


def running_broker(broker_cls, prefix):
    """For module fixtures that need their own broker settings: starts `broker_cls` in a fresh
    work dir, yields it, then stops it and removes the dir (kept with SPOOL_TEST_KEEP)."""
    workdir = tempfile.mkdtemp(prefix=f"spool-it-{prefix}-{TARGET}-")
    b = broker_cls(TARGET, workdir)
    try:
        b.start()
        yield b
    finally:
        if b.pid is not None and not b.alive():
            sys.stderr.write(f"[broker died; log tail]\n{b.log_tail()}\n")
        b.stop()
        if os.environ.get("SPOOL_TEST_KEEP"):
            sys.stderr.write(f"[broker workdir kept: {workdir}]\n")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def broker(request):
    """One broker per test module. Yields a Broker with .bootstrap, .data_dir, .pid,
    .restart(), .kill9(), .stop()."""
    workdir = tempfile.mkdtemp(prefix=f"spool-it-{TARGET}-")
    try:
        b = make_broker(workdir)
    except BaseException:
        sys.stderr.write(f"[broker workdir kept: {workdir}]\n")
        raise
    try:
        yield b
    finally:
        failed = getattr(request.node, "_spool_failed", False)
        if failed:
            sys.stderr.write(f"\n[{TARGET} log tail for {request.node.name}]\n{b.log_tail()}\n")
        b.stop()
        if os.environ.get("SPOOL_TEST_KEEP") or failed:
            sys.stderr.write(f"[broker workdir kept: {workdir}]\n")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and item.module is not None:
        # Flag the module so the broker fixture prints its log tail on teardown.
        for node in (item.parent,):
            setattr(node, "_spool_failed", True)


# ---------------------------------------------------------------------------
# Client helper programs (all share the CLI documented in tests/clients/clientcli.py)
# ---------------------------------------------------------------------------
JAVA_JAR = Path(os.environ.get("SPOOL_JAVA_CLIENT_JAR",
                               TESTS / "clients" / "java" / "target" / "spool-java-client.jar"))
GO_BIN = Path(os.environ.get("SPOOL_GO_CLIENT_BIN", DEPS / "bin" / "spool-go-client"))


def helper_cmd(name):
    """argv prefix of the helper program for a client name (not kcat: tests drive it directly)."""
    if name == "confluent":
        return [sys.executable, str(TESTS / "clients" / "py_confluent.py")]
    if name == "kafka-python":
        return [sys.executable, str(TESTS / "clients" / "py_kafka.py")]
    if name == "java":
        if not JAVA_JAR.exists():
            pytest.fail(f"{JAVA_JAR} missing: run deploy/install-test-deps.sh", pytrace=False)
        return ["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-jar", str(JAVA_JAR)]
    if name == "franz-go":
        if not GO_BIN.exists():
            pytest.fail(f"{GO_BIN} missing: run deploy/install-test-deps.sh", pytrace=False)
        return [str(GO_BIN)]
    raise ValueError(name)


def kcat_bin():
    k = shutil.which("kcat") or shutil.which("kafkacat")
    if not k:
        pytest.fail("kcat not installed: run deploy/install-test-deps.sh", pytrace=False)
    return k
