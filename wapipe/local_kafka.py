"""A real Apache Kafka broker (KRaft) on this machine, from Maven Central jars: one
node, or a small cluster of them for failover tests.

There is no Docker engine here and Apache's download site is out of reach, but
Maven Central is: `deploy/kafka/pom.xml` names the broker and tool jars, Maven
copies them into a cache folder, and the broker runs as `java kafka.Kafka` in
its own process group, with its data, config and log under one directory.
`wapipe kafka up|down|status` wrap this module; so do `make run` and the tests.

`LocalCluster` runs several such nodes (each a combined broker and controller,
with a static controller quorum of all of them) on free loopback ports, and can
kill and restart any one of them: the reliability tests' broker failover.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import port_for
from aiokafka.admin import AIOKafkaAdminClient

from wapipe.settings import Settings

POM = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "pom.xml"
_STAMP = ".complete"


class LocalKafkaError(RuntimeError):
    """The local broker cannot be set up or started; the message says why and what to do."""


@dataclass(frozen=True)
class BrokerStatus:
    pid: int | None
    answering: bool
    bootstrap: str

    @property
    def running(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True)
class Voter:
    """A member of a cluster's static controller quorum."""

    node_id: int
    controller_port: int


@dataclass(frozen=True)
class LocalBroker:
    """One broker: `directory` holds its config, data, log and pid file.

    Alone (no `voters`) it is a single-node cluster with a quorum of itself. As a
    node of a `LocalCluster` it has its `node_id`, the cluster's static quorum
    (`voters`, itself among them) and the cluster's id, shared by every node.
    """

    directory: Path
    jar_cache: Path
    port: int
    controller_port: int
    heap: str = "512m"
    node_id: int = 1
    voters: tuple[Voter, ...] = ()
    cluster_id: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBroker:
        return cls(
            directory=(settings.home / "kafka").resolve(),
            jar_cache=(settings.home / "kafka-jars").resolve(),
            port=settings.local_kafka_port,
            controller_port=settings.local_kafka_controller_port,
            heap=settings.local_kafka_heap,
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @property
    def _pid_file(self) -> Path:
        return self.directory / "broker.pid"

    @property
    def _properties(self) -> Path:
        return self.directory / "server.properties"

    # --- jars ---------------------------------------------------------------------
    def jars(self) -> Path:
        """The folder of resolved jars, resolving them with Maven on first use."""
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
        target = self.jar_cache / digest
        if (target / _STAMP).exists():
            return target
        if shutil.which("mvn") is None:
            raise LocalKafkaError(
                f"the Kafka jars are not cached in {target} and Maven (`mvn`) is not installed "
                "to fetch them: install Maven (Debian: apt-get install maven)"
            )
        target.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
             f"-DoutputDirectory={target}", "-DincludeScope=runtime"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise LocalKafkaError(
                "could not resolve the Kafka jars from Maven Central (offline, or a proxy "
                f"missing?). Maven said:\n{tail}"
            )
        (target / _STAMP).write_text(digest)
        return target

    # --- lifecycle ------------------------------------------------------------------
    def status(self) -> BrokerStatus:
        pid = self._running_pid()
        answering = pid is not None and _port_open(self.port)
        return BrokerStatus(pid=pid, answering=answering, bootstrap=self.bootstrap)

    def up(self, timeout: float = 90.0) -> BrokerStatus:
        """Start the broker unless it runs; return once it answers Kafka requests."""
        if self._running_pid() is not None:
            self._wait_until_answering(timeout)
            return self.status()
        process = self.launch()
        self._wait_until_answering(timeout, process)
        return self.status()

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the broker's process and return at once, without waiting for it to
        answer: a cluster's node answers only once a quorum of its nodes runs."""
        java = shutil.which("java")
        if java is None:
            raise LocalKafkaError(
                "Java is not installed: the local broker needs Java 17 or newer "
                "(Debian: apt-get install openjdk-17-jre-headless)"
            )
        for port in (self.port, self.controller_port):
            if _port_open(port):
                raise LocalKafkaError(
                    f"port {port} is taken by another process: stop it, or choose other "
                    "ports with WAPIPE_LOCAL_KAFKA_PORT / WAPIPE_LOCAL_KAFKA_CONTROLLER_PORT, "
                    "or point WAPIPE_KAFKA_BOOTSTRAP at a broker you run yourself"
                )
        jars = self.jars()
        self._write_config()
        classpath = f"{jars}/*"
        if not (self.directory / "data" / "meta.properties").exists():
            self._format_storage(java, classpath)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
                 "-Djava.awt.headless=true",
                 f"-Dlog4j2.configurationFile=file:{self.directory / 'log4j2.properties'}",
                 "-cp", classpath, "kafka.Kafka", str(self._properties)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.directory,
            )  # fmt: skip
        self._pid_file.write_text(str(process.pid))
        return process

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after `timeout`). False if none ran."""
        pid = self._running_pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self._pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the broker at once, as a crash would (for fault tests)."""
        pid = self._running_pid()
        if pid is not None:
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
            self._pid_file.unlink(missing_ok=True)

    # --- internals ------------------------------------------------------------------
    def _running_pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _alive(pid):
            return None
        # A pid file can outlive its process and the pid be reused: check it is ours.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if str(self._properties).encode() in cmdline else None

    def _write_config(self) -> None:
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        listeners = (
            f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
        )
        # Internal topics get as many replicas as there are nodes, up to 3; one node
        # cannot have more. Fewer partitions make the first consumer group and
        # transaction start faster.
        replicas = min(3, max(1, len(self.voters)))
        min_insync = min(2, replicas)
        if self.voters:
            quorum = "controller.quorum.voters=" + ",".join(
                f"{voter.node_id}@127.0.0.1:{voter.controller_port}" for voter in self.voters
            )
            title = f"LocalCluster: node {self.node_id} of a local {len(self.voters)}-node cluster"
        else:
            quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}"
            title = "`wapipe kafka up`: a single-node KRaft broker for development"
        self._properties.write_text(
            f"# Generated by {title}.\n"
            "process.roles=broker,controller\n"
            f"node.id={self.node_id}\n"
            f"{quorum}\n"
            f"listeners={listeners}\n"
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}\n"
            "controller.listener.names=CONTROLLER\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
            f"log.dirs={data}\n"
            "num.partitions=1\n"
            # Topics are created by `wapipe topics create`, as in production.
            "auto.create.topics.enable=false\n"
            f"offsets.topic.replication.factor={replicas}\n"
            "offsets.topic.num.partitions=6\n"
            f"transaction.state.log.replication.factor={replicas}\n"
            f"transaction.state.log.min.isr={min_insync}\n"
            "transaction.state.log.num.partitions=6\n"
            f"share.coordinator.state.topic.replication.factor={replicas}\n"
            f"share.coordinator.state.topic.min.isr={min_insync}\n"
            "group.initial.rebalance.delay.ms=0\n"
            + (
                # A cluster's defaults for topics made without explicit settings
                # (a tool's own topics): the production pair, 3 replicas and 2 in sync.
                f"default.replication.factor={replicas}\nmin.insync.replicas={min_insync}\n"
                if self.voters
                else ""
            )
        )
        (self.directory / "log4j2.properties").write_text(
            "status = error\n"
            "appender.out.type = Console\n"
            "appender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = info\n"
            "rootLogger.appenderRef.out.ref = OUT\n"
            "logger.state.name = state.change.logger\n"
            "logger.state.level = warn\n"
        )

    def _format_storage(self, java: str, classpath: str) -> None:
        cluster_id = self.cluster_id or new_cluster_id()
        # A static quorum (`controller.quorum.voters`) formats without naming the
        # initial controllers; a lone node is a quorum of itself (`--standalone`).
        quorum = [] if self.voters else ["--standalone"]
        # Eligible leader replicas (KIP-966) off. With them, a node that died uncleanly
        # comes back as the leader of its partitions only after an unclean recovery,
        # seconds after its transaction coordinator has started again; the coordinator
        # skips the markers of a leaderless partition as deleted, so a transaction that
        # committed during the outage can stay open on it for good, and read_committed
        # readers stop at its last stable offset (KAFKA-20716;
        # tests/reliability/test_broker_outage.py saw it). Without them, a lone node
        # stays in its partitions' ISR and leads them as soon as it is back.
        features = ["--feature", "eligible.leader.replicas.version=0"]
        # `--cluster-id=...` in one argument: an id may begin with "-".
        result = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format", *quorum, *features,
             f"--cluster-id={cluster_id}", "-c", str(self._properties)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise LocalKafkaError(
                f"formatting the broker's storage failed:\n{result.stdout}{result.stderr}"
            )

    def _wait_until_answering(
        self, timeout: float, process: subprocess.Popen[bytes] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise LocalKafkaError(
                    f"the broker exited with status {process.returncode} during start-up; "
                    f"the end of {self.log_file}:\n{self._log_tail()}"
                )
            error = probe(self.bootstrap, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            if error is None:
                return
            last_error = error
            time.sleep(0.3)
        raise LocalKafkaError(
            f"the broker did not answer on {self.bootstrap} within {timeout:.0f} s "
            f"({last_error}); the end of {self.log_file}:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log written)"


class LocalCluster:
    """`nodes` local KRaft nodes, each a broker and a controller, on free loopback ports.

    The controller quorum is static: every node is a voter, so the cluster needs a
    majority of them running (2 of 3) to elect a controller, and keeps serving with
    one node killed. Topics get replication and min.insync.replicas from whoever
    creates them; the defaults for those that do not say (a tool's own topics) are
    3 replicas (as many as there are nodes, up to 3) and 2 in sync.
    Node `i` (1-based) lives in `directory / f"node-{i}"`.
    """

    def __init__(
        self, directory: Path, jar_cache: Path, nodes: int = 3, heap: str = "512m"
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, not {nodes}")
        ports = [(free_port(), free_port()) for _ in range(nodes)]
        voters = tuple(Voter(index + 1, controller) for index, (_, controller) in enumerate(ports))
        cluster_id = new_cluster_id()
        self.directory = directory
        self.nodes: tuple[LocalBroker, ...] = tuple(
            LocalBroker(
                directory=directory / f"node-{voter.node_id}",
                jar_cache=jar_cache,
                port=port,
                controller_port=voter.controller_port,
                heap=heap,
                node_id=voter.node_id,
                voters=voters,
                cluster_id=cluster_id,
            )
            for voter, (port, _) in zip(voters, ports, strict=True)
        )

    def __iter__(self) -> Iterator[LocalBroker]:
        return iter(self.nodes)

    @property
    def bootstrap(self) -> str:
        """Every node's client address: clients find the cluster while any one answers."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalBroker:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node {node_id} in this cluster (nodes 1 to {len(self.nodes)})")

    def up(self, timeout: float = 180.0) -> list[BrokerStatus]:
        """Start every node that does not run; return once all are in the cluster."""
        deadline = time.monotonic() + timeout
        launched: list[tuple[LocalBroker, subprocess.Popen[bytes]]] = []
        try:
            # All at once: no node answers before a majority of the quorum runs.
            for node in self.nodes:
                if not node.status().running:
                    launched.append((node, node.launch()))
            for node, process in launched:
                node._wait_until_answering(max(1.0, deadline - time.monotonic()), process)
            self.wait_for_brokers(len(self.nodes), max(1.0, deadline - time.monotonic()))
        except BaseException:
            for node, _ in launched:
                node.down(timeout=5)
            raise
        return [node.status() for node in self.nodes]

    def down(self, timeout: float = 30.0) -> bool:
        """Stop every node: SIGTERM to all at once, SIGKILL to any still running after
        `timeout`. False if none ran."""
        # All at once: one by one, the last nodes would wait for a quorum that is gone.
        running = [(node, pid) for node in self.nodes if (pid := node._running_pid())]
        for _, pid in running:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node, pid in running:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.05)
            node._pid_file.unlink(missing_ok=True)
        return bool(running)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would (for failover tests)."""
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout: float = 90.0) -> BrokerStatus:
        """Start one node again (after `kill` or `down`); return once it answers and the
        cluster counts it among its brokers again."""
        status = self.node(node_id).up(timeout)
        self.wait_for_brokers(len(self.nodes), timeout)
        return status

    def brokers(self, timeout: float = 10.0) -> set[int]:
        """The ids of the brokers the cluster reports (running and not fenced)."""
        live = [node.bootstrap for node in self.nodes if node.status().running]
        if not live:
            return set()

        async def ask() -> set[int]:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=",".join(live), request_timeout_ms=int(timeout * 1000)
            )
            try:
                await asyncio.wait_for(admin.start(), timeout)
                cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()
            return {int(broker["node_id"]) for broker in cluster["brokers"]}

        return asyncio.run(ask())

    def wait_for_brokers(self, count: int, timeout: float) -> set[int]:
        """Wait until the cluster reports `count` brokers; return their ids."""
        deadline = time.monotonic() + timeout
        reported: set[int] = set()
        last_error = ""
        while time.monotonic() < deadline:
            try:
                reported = self.brokers(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            except Exception as error:
                last_error = f" (last error: {type(error).__name__}: {error})"
            if len(reported) == count:
                return reported
            time.sleep(0.3)
        raise LocalKafkaError(
            f"the cluster reported brokers {sorted(reported)}, not {count}, within "
            f"{timeout:.0f} s{last_error}; the nodes' logs are under {self.directory}"
        )


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def probe(bootstrap: str, timeout: float = 5.0) -> str | None:
    """Ask the cluster for its metadata: None when it answers, else the reason it did not."""

    async def ask() -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        try:
            await asyncio.wait_for(admin.start(), timeout)
            await asyncio.wait_for(admin.describe_cluster(), timeout)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as error:
        return f"cannot connect to {bootstrap}: {error}"
    try:
        asyncio.run(ask())
    except Exception as error:
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return None


def free_port() -> int:
    """A loopback TCP port that nothing listens on (now) and no other call returned.

    Not `bind(("127.0.0.1", 0))`: that port is the kernel's to hand out again, to the next
    bind to port 0 of any process, and the ports beside it (`wapipe run` gives its workers
    consecutive ports) to any outgoing connection, such as a Kafka client's, before the
    server that was meant to listen there starts. port-for picks from the ports outside
    the ephemeral range, which only an explicit bind takes. The neighbours of a port
    returned are kept back too, for the consecutive ports.
    """
    port = port_for.select_random(exclude_ports=_handed_out)
    _handed_out.update(range(port - _NEIGHBOURS, port + _NEIGHBOURS + 1))
    return port


_NEIGHBOURS = 8  # more than `wapipe run` has workers
_handed_out: set[int] = set()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
