"""Ingest benchmark: the ingester (Kafka, acks=all) against a bare aiohttp handler, same run.

Two measurements, each on every server in turn, on loopback:
1. Throughput, closed loop: wrk (Debian) posting the example bodies in rotation
   with a fixed number of connections; requests/s, p50, p99.
2. Latency at a fixed rate, open loop: vegeta (Go) at `--rate` requests/s, so a
   slow answer cannot slow the load down (no coordinated omission); p50, p99.
Servers: the ingester with uvloop (the default), the ingester on asyncio's own
loop (to measure what uvloop buys), and the bare handler (the HTTP ceiling).
3. The broker's ceiling: Kafka's own producer benchmark (`kafka-producer-perf-test`,
   the class in the broker's jars) sending the same bodies with the ingester's
   producer settings (idempotent, acks=all, lz4, linger 2 ms): records/s the
   broker takes from one client on this machine, with no HTTP in front.
It prints a Markdown table with the ratios and writes it to bench/results/.

Run with `make bench-ingest` (installs wrk with apt and vegeta with `go install`
when missing). Uses WAPIPE_KAFKA_BOOTSTRAP if set, else starts its own broker.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from wapipe.local_kafka import LocalBroker  # noqa: E402
from wapipe.settings import Settings  # noqa: E402
from wapipe.topics import create_topics  # noqa: E402

EXAMPLES = sorted((REPO / "tests" / "fixtures" / "examples").rglob("*.json"))
VEGETA = "github.com/tsenart/vegeta/v12@v12.12.0"


@dataclass
class Server:
    name: str
    port: int
    command: list[str]
    environment: dict[str, str]
    process: subprocess.Popen[bytes] | None = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per server (median)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument(
        "--rates", default="3000,4000,5000", help="vegeta requests per second, comma-separated"
    )
    parser.add_argument("--rate-seconds", type=int, default=20, help="length of a vegeta run")
    parser.add_argument("--producer-records", type=int, default=500_000,
                        help="records for kafka-producer-perf-test")  # fmt: skip
    arguments = parser.parse_args()

    wrk, vegeta = _tool("wrk"), _vegeta()
    explicit = os.environ.get("WAPIPE_KAFKA_BOOTSTRAP")
    broker = None
    if explicit:
        bootstrap = explicit
    else:
        broker = LocalBroker(
            directory=REPO / ".wapipe" / "bench-kafka",
            jar_cache=REPO / ".wapipe" / "kafka-jars",
            port=19092,
            controller_port=19093,
        )
        print(f"starting a broker for the benchmark on {broker.bootstrap} ...", flush=True)
        broker.up()
        bootstrap = broker.bootstrap
    prefix = f"bench{int(time.time())}.whatsapp"
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    asyncio.run(create_topics(settings))

    spool = Path(tempfile.mkdtemp(prefix="wapipe-bench-spool-"))
    common = {
        **os.environ, "WAPIPE_KAFKA_BOOTSTRAP": bootstrap, "WAPIPE_TOPIC_PREFIX": prefix,
        "WAPIPE_INGEST_HOST": "127.0.0.1", "WAPIPE_LOG_LEVEL": "warning",
    }  # fmt: skip
    wapipe = [sys.executable, "-m", "wapipe", "ingest"]
    servers = [
        Server("ingester (uvloop)", 18080, wapipe,
               {**common, "WAPIPE_INGEST_PORT": "18080", "WAPIPE_SPOOL_DIR": f"{spool}/a"}),
        Server("ingester (asyncio loop)", 18082, wapipe,
               {**common, "WAPIPE_INGEST_PORT": "18082", "WAPIPE_SPOOL_DIR": f"{spool}/b",
                "WAPIPE_UVLOOP": "false"}),
        Server("bare aiohttp handler", 18081,
               [sys.executable, str(Path(__file__).with_name("bare_handler.py")), "18081"], common),
    ]  # fmt: skip
    try:
        for server in servers:
            server.process = subprocess.Popen(server.command, env=server.environment)
        for server in servers:
            _wait_ready(server)
        throughput = _throughput(wrk, servers, arguments)
        ceiling = _producer_ceiling(bootstrap, f"{prefix}.webhooks.raw", arguments.producer_records)
        rates = [int(rate) for rate in arguments.rates.split(",")]
        fixed_rate = {
            (server.name, rate): _fixed_rate(vegeta, server, rate, arguments.rate_seconds)
            for rate in rates
            for server in servers
        }
    finally:
        for server in servers:
            if server.process is not None:
                server.process.send_signal(signal.SIGTERM)
                server.process.wait(30)
        shutil.rmtree(spool, ignore_errors=True)
        if broker is not None:
            broker.down()
    report = _report(throughput, fixed_rate, ceiling, arguments)
    print(report)
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text(report)
    return 0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(
            f"{name} is not installed: `make bench-ingest` installs it (apt-get install {name})"
        )
    return path


def _vegeta() -> str:
    target = REPO / ".wapipe" / "bin" / "vegeta"
    if not target.exists():
        print(f"installing vegeta ({VEGETA}) with go install ...", flush=True)
        subprocess.run(
            ["go", "install", VEGETA], check=True,
            env={**os.environ, "GOBIN": str(target.parent), "GOFLAGS": "-mod=mod"},
        )  # fmt: skip
    return str(target)


def _wait_ready(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    path = "/readyz" if "ingester" in server.name else "/webhooks/whatsapp"
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{server.port}{path}",
                data=None if path == "/readyz" else b"{}",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=1):  # noqa: S310
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{server.name} did not become ready on port {server.port}")


def _wrk(wrk: str, server: Server, seconds: int, connections: int) -> dict[str, float]:
    result = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
         "-s", str(Path(__file__).with_name("rotate.lua")),
         f"http://127.0.0.1:{server.port}", "--", *map(str, EXAMPLES)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    return summary


def _throughput(wrk: str, servers: list[Server], arguments: argparse.Namespace) -> dict[str, dict]:
    for server in servers:  # warm-up: JIT-free, but caches, connections, Kafka batches
        _wrk(wrk, server, 3, arguments.connections)
    runs: dict[str, list[dict[str, float]]] = {server.name: [] for server in servers}
    for round_number in range(arguments.rounds):
        for server in servers:  # interleaved, so drift of the machine hits all alike
            summary = _wrk(wrk, server, arguments.seconds, arguments.connections)
            print(
                f"round {round_number + 1} {server.name}: {summary['rps']:.0f} req/s, "
                f"p99 {summary['p99_us'] / 1000:.1f} ms, non-2xx {summary['non_2xx']}",
                flush=True,
            )
            runs[server.name].append(summary)
    return {
        name: {
            "rps": statistics.median(run["rps"] for run in summaries),
            "p50_ms": statistics.median(run["p50_us"] for run in summaries) / 1000,
            "p99_ms": statistics.median(run["p99_us"] for run in summaries) / 1000,
            "errors": sum(run["non_2xx"] + run["socket_errors"] for run in summaries),
        }
        for name, summaries in runs.items()
    }


def _producer_ceiling(bootstrap: str, topic: str, records: int) -> dict[str, float]:
    jars = LocalBroker(directory=REPO / ".wapipe" / "bench-kafka",
                       jar_cache=REPO / ".wapipe" / "kafka-jars", port=0,
                       controller_port=0).jars()  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as payloads:
        # One body per line: the tool splits its payload file on newlines.
        payloads.write("\n".join(json.dumps(json.loads(p.read_bytes())) for p in EXAMPLES))
        payloads.flush()
        result = subprocess.run(
            ["java", "-cp", f"{jars}/*", "org.apache.kafka.tools.ProducerPerformance",
             "--topic", topic, "--num-records", str(records), "--throughput", "-1",
             "--payload-file", payloads.name, "--producer-props",
             f"bootstrap.servers={bootstrap}", "acks=all", "enable.idempotence=true",
             "compression.type=lz4", "linger.ms=2"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    # The last line: "N records sent, R records/sec (M MB/sec), A ms avg latency, ..."
    fields = result.stdout.strip().splitlines()[-1].split(", ")
    summary = {"rps": float(fields[1].split()[0]), "p50_ms": float(fields[4].split()[0]),
               "p99_ms": float(fields[6].split()[0])}  # fmt: skip
    print(f"kafka-producer-perf-test: {summary['rps']:.0f} records/s", flush=True)
    return summary


def _fixed_rate(vegeta: str, server: Server, rate: int, seconds: int) -> dict[str, float]:
    targets = "\n".join(
        json.dumps({
            "method": "POST", "url": f"http://127.0.0.1:{server.port}/webhooks/whatsapp",
            "header": {"Content-Type": ["application/json"]},
            "body": base64.b64encode(path.read_bytes()).decode(),
        })
        for path in EXAMPLES
    )  # fmt: skip
    attack = subprocess.run(
        [vegeta, "attack", "-format=json", f"-rate={rate}/s",
         f"-duration={seconds}s", "-timeout=5s", "-max-workers=512"],
        input=targets.encode(), capture_output=True, check=True,
    )  # fmt: skip
    report = subprocess.run(
        [vegeta, "report", "-type=json"], input=attack.stdout, capture_output=True, check=True
    )
    figures = json.loads(report.stdout)
    summary = {
        "rate": figures["rate"],
        "p50_ms": figures["latencies"]["50th"] / 1e6,
        "p99_ms": figures["latencies"]["99th"] / 1e6,
        "success": figures["success"],
    }
    print(
        f"{server.name} at {rate}/s: p50 {summary['p50_ms']:.2f} ms, "
        f"p99 {summary['p99_ms']:.2f} ms, success {summary['success']:.4f}",
        flush=True,
    )
    return summary


def _report(
    throughput: dict[str, dict], fixed: dict[tuple[str, int], dict], ceiling: dict[str, float],
    arguments: argparse.Namespace,
) -> str:  # fmt: skip
    bare = "bare aiohttp handler"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())  # fmt: skip
    lines = [
        f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        "broker, servers and load tools all on this machine.",
        "",
        f"Throughput, wrk -t2 -c{arguments.connections}, {arguments.rounds} x "
        f"{arguments.seconds} s per server, interleaved, median:",
        "",
        "| server | requests/s | ratio to bare | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, figures in throughput.items():
        lines.append(
            f"| {name} | {figures['rps']:.0f} | {figures['rps'] / throughput[bare]['rps']:.2f} "
            f"| {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | {figures['errors']} |"
        )
    lines.append(
        f"| Kafka's producer alone (kafka-producer-perf-test, {arguments.producer_records:,} "
        f"records; latency is send to ack) | {ceiling['rps']:.0f} "
        f"| {ceiling['rps'] / throughput[bare]['rps']:.2f} | {ceiling['p50_ms']:.2f} "
        f"| {ceiling['p99_ms']:.2f} | - |"
    )
    lines += [
        "",
        f"Fixed rate, vegeta, {arguments.rate_seconds} s per rate and server:",
        "",
        "| server | rate/s | achieved/s | p50 ms | p99 ms | success |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (name, rate), figures in fixed.items():
        lines.append(
            f"| {name} | {rate} | {figures['rate']:.0f} | {figures['p50_ms']:.2f} "
            f"| {figures['p99_ms']:.2f} | {figures['success']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
