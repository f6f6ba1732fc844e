"""`wapipe status`: the verdict and its rendering from plain data, then the command against
the real broker and a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from wapipe.settings import Settings
from wapipe.status import (
    EXIT_NO_KAFKA,
    EXIT_OK,
    EXIT_PROBLEM,
    CommitAge,
    Group,
    Member,
    Options,
    PartitionOffsets,
    Scrape,
    Snapshot,
    assess,
    commit_age,
    endpoints,
    events_per_second,
    render_json,
    render_table,
    scrape_ingester,
)
from wapipe.topics import RAW

NOW = 1_780_000_000.0
GROUP = "whatsapp.normalize"
RAW_TOPIC = "whatsapp.webhooks.raw"
WORKER = "http://127.0.0.1:6066"
INGESTER = "http://127.0.0.1:8080"


def member(*partitions: int, instance: str = "first") -> Member:
    return Member(instance, "10.0.0.7", tuple((RAW_TOPIC, p) for p in partitions))


def offsets(
    partition: int, committed: int | None, end: int, owner: str | None = "first@10.0.0.7"
) -> PartitionOffsets:
    return PartitionOffsets(RAW_TOPIC, partition, committed, 0, end, owner=owner)


def group(*partitions: PartitionOffsets, members: tuple[Member, ...] | None = None,
          state: str = "Stable") -> Group:  # fmt: skip
    if members is None:
        members = (member(*(p.partition for p in partitions)),)
    return Group(GROUP, state, members, partitions)


def worker_scrapes(*records: float, every: float = 1.0, **fields: Any) -> list[Scrape]:
    """Scrapes of a worker `every` seconds apart, the last at NOW."""
    start = NOW - every * (len(records) - 1)
    return [Scrape(WORKER, start + i * every, ready=True, records=r, commits=r,
                   restore_remaining=0.0, last_commit_at=fields.get("last_commit_at"))
            for i, r in enumerate(records)]  # fmt: skip


def snapshot(groups: dict[str, Group], scrapes: dict[str, list[list[Scrape]]]) -> Snapshot:
    return Snapshot(NOW, "127.0.0.1:9092", "whatsapp", groups, scrapes)


def a_healthy_snapshot() -> Snapshot:
    ingester = [Scrape(INGESTER, NOW - 1, ready=True, records=100.0, spool_records=0.0),
                Scrape(INGESTER, NOW, ready=True, records=150.0, spool_records=0.0)]  # fmt: skip
    return snapshot(
        {"normalize": group(offsets(0, 120, 120), offsets(1, 80, 81))},
        {"ingest": [ingester], "normalize": [worker_scrapes(1000, 1050)]},
    )


# --------------------------------------------------------------------------- the verdict


def test_a_healthy_pipeline_is_all_well():
    report = assess(a_healthy_snapshot(), max_lag=1000)

    assert report.ok
    assert report.exit_status == EXIT_OK
    ingest, normalize = report.services
    assert (ingest.state, ingest.events_per_second, ingest.spool_records) == ("ok", 50.0, 0)
    assert normalize.state == "ok"
    assert normalize.lag == 1
    assert normalize.events_per_second == 50.0
    assert normalize.assigned == 2
    assert [(t.topic, t.partitions, t.lag, t.owners) for t in normalize.topics] == [
        (RAW_TOPIC, 2, 1, ("first@10.0.0.7",))
    ]


def test_lag_is_the_end_minus_the_committed_offset_or_the_start_without_one():
    assert offsets(0, 90, 120).lag == 30
    assert PartitionOffsets(RAW_TOPIC, 0, None, 40, 120).lag == 80  # never committed
    assert offsets(0, 130, 120).lag == 0  # never negative
    # Only a transaction marker between the committed offset and the end: nothing to read.
    assert PartitionOffsets(RAW_TOPIC, 0, 119, 0, 120, markers_only=True).lag == 0


def test_lag_above_the_threshold_is_behind():
    data = snapshot({"normalize": group(offsets(0, 0, 700), offsets(1, 0, 400))},
                    {"normalize": [worker_scrapes(0, 10)]})  # fmt: skip

    report = assess(data, max_lag=1000)

    [normalize] = report.services
    assert normalize.state == "behind"
    assert normalize.lag == 1100
    assert report.problems == ("normalize: lag 1,100 records, above 1,000",)
    assert report.exit_status == EXIT_PROBLEM
    assert assess(data, max_lag=1100).ok  # the threshold itself is not behind


def test_no_worker_and_no_web_server_is_down():
    data = snapshot(
        {"normalize": group(offsets(0, 5, 9), members=())},
        {"normalize": [[Scrape(WORKER, NOW, error="connection refused")]]},
    )

    report = assess(data, max_lag=1000)

    [normalize] = report.services
    assert normalize.state == "down"
    assert report.exit_status == EXIT_PROBLEM
    assert report.problems == (
        "normalize: not running: no worker in its consumer group whatsapp.normalize, and "
        f"{WORKER}: connection refused",
    )
    assert normalize.lag == 4  # the backlog shows while it is down


def test_a_worker_in_the_group_whose_web_server_is_unreachable_is_down():
    data = snapshot({"normalize": group(offsets(0, 5, 5))},
                    {"normalize": [[Scrape(WORKER, NOW, error="timed out")]]})  # fmt: skip

    [normalize] = assess(data, max_lag=1000).services

    assert normalize.state == "down"
    assert normalize.problems == (f"web server unreachable at {WORKER}: timed out",)


def test_one_of_two_workers_unreachable_is_degraded():
    other = "http://10.0.0.8:6066"
    data = snapshot(
        {"normalize": group(offsets(0, 5, 5), offsets(1, 5, 5),
                            members=(member(0), member(1, instance="second")))},
        {"normalize": [worker_scrapes(1, 2), [Scrape(other, NOW, error="connection refused")]]},
    )  # fmt: skip

    [normalize] = assess(data, max_lag=1000).services

    assert normalize.state == "degraded"
    assert normalize.problems == (f"web server unreachable at {other}: connection refused",)


def test_a_worker_restoring_its_tables_is_not_yet_well():
    scrapes = [Scrape(WORKER, NOW, ready=False, records=0.0, commits=0.0,
                      restore_remaining=12_345.0)]  # fmt: skip
    data = snapshot({"normalize": group(offsets(0, 0, 0))}, {"normalize": [scrapes]})

    report = assess(data, max_lag=1000)

    [normalize] = report.services
    assert normalize.state == "restoring"
    assert normalize.restore_remaining == 12_345
    assert report.problems == ("normalize: restoring its tables: 12,345 changelog records to go",)


def test_a_rebalancing_group_and_a_worker_not_ready_are_not_yet_well():
    rebalancing = snapshot({"normalize": group(offsets(0, 0, 0), state="PreparingRebalance")},
                           {"normalize": [worker_scrapes(1, 2)]})  # fmt: skip
    starting = snapshot(
        {"normalize": group(offsets(0, 0, 0))},
        {"normalize": [[Scrape(WORKER, NOW, ready=False, records=0.0, restore_remaining=0.0)]]},
    )

    assert assess(rebalancing, 1000).services[0].state == "rebalancing"
    assert assess(starting, 1000).services[0].state == "starting"
    assert not assess(rebalancing, 1000).ok
    assert not assess(starting, 1000).ok


def test_missing_source_topics_say_how_to_create_them():
    data = snapshot({"normalize": Group(GROUP, "Dead", (), (), (RAW_TOPIC,))}, {})

    [normalize] = assess(data, max_lag=1000).services

    assert normalize.problems[0] == (
        f"missing source topics {RAW_TOPIC}: create them with `wapipe topics create`"
    )


def test_the_ingester_not_ready_or_unreachable_is_a_problem():
    not_ready = Scrape(INGESTER, NOW, ready=False, reason="kafka unavailable", records=0.0,
                       spool_records=42.0)  # fmt: skip
    down = Scrape(INGESTER, NOW, error="connection refused")

    [ingest] = assess(snapshot({}, {"ingest": [[not_ready]]}), 1000).services
    assert (ingest.state, ingest.spool_records) == ("not ready", 42)
    assert ingest.problems == (f"not ready at {INGESTER}: kafka unavailable",)
    [ingest] = assess(snapshot({}, {"ingest": [[down]]}), 1000).services
    assert ingest.state == "down"


def test_broker_only_checks_no_web_server():
    data = snapshot({"normalize": group(offsets(0, 5, 5))}, {})

    report = assess(data, max_lag=1000)

    assert report.ok
    assert report.services[0].events_per_second is None


# --------------------------------------------------------------------------- rates and commits


def test_events_per_second_over_the_last_minute():
    history = worker_scrapes(*[10.0 * i for i in range(90)])  # 10 a second for 90 s

    rate, span = events_per_second(history, window=60) or (None, None)

    assert rate == pytest.approx(10.0)
    assert span == 60


def test_events_per_second_counts_a_restarted_worker_from_zero():
    history = worker_scrapes(100, 110, 5, 15)  # restarted between the 2nd and the 3rd

    assert events_per_second(history, window=60) == (pytest.approx(25 / 3), 3)


def test_no_rate_from_a_single_scrape_or_without_the_counter():
    assert events_per_second(worker_scrapes(5), window=60) is None
    assert events_per_second([Scrape(WORKER, NOW, error="refused")] * 2, window=60) is None


def test_the_last_commit_from_the_exported_time_or_bounded_by_the_commit_counter():
    exact = worker_scrapes(1, 2, last_commit_at=NOW - 4)
    assert commit_age(exact, NOW) == CommitAge(4, "=")

    moving = [Scrape(WORKER, NOW - 2, records=0, commits=7), Scrape(WORKER, NOW, records=0,
                                                                   commits=8)]  # fmt: skip
    assert commit_age(moving, NOW) == CommitAge(2, "<")
    still = [Scrape(WORKER, NOW - 30, records=0, commits=8), Scrape(WORKER, NOW, records=0,
                                                                    commits=8)]  # fmt: skip
    assert commit_age(still, NOW) == CommitAge(30, ">")
    assert commit_age(still[:1], NOW) is None  # one scrape says nothing
    never = [Scrape(WORKER, NOW - 2, records=0, commits=0), Scrape(WORKER, NOW, records=0,
                                                                   commits=0)]  # fmt: skip
    assert commit_age(never, NOW) is None
    # A worker that has not committed yet exports 0: not 56 years ago, nothing yet.
    started = [
        Scrape(WORKER, at, records=0, commits=0, last_commit_at=0.0) for at in (NOW - 2, NOW)
    ]
    assert commit_age(started, NOW) is None

    assert [CommitAge(4.2, "=").text(), CommitAge(2, "<").text(), CommitAge(61, ">").text()] == [
        "4s",
        "<2s",
        ">61s",
    ]


# --------------------------------------------------------------------------- rendering


def test_the_table_shows_each_service_each_topic_and_all_well():
    report = assess(a_healthy_snapshot(), max_lag=1000)

    text = render_table(report, note="(events/s over 1 s)")

    lines = text.splitlines()
    assert lines[0].startswith("Kafka 127.0.0.1:9092   topic prefix whatsapp   max lag 1,000")
    assert lines[2].split() == ["SERVICE", "STATE", "WORKERS", "PARTITIONS", "LAG", "EVENTS/S",
                                "LAST", "COMMIT", "ADDRESS"]  # fmt: skip
    assert lines[3].split() == ["ingest", "ok", "-", "-", "-", "50.0", "-", INGESTER, "spool",
                                "0"]  # fmt: skip
    assert lines[4].split() == ["normalize", "ok", "1", "2/2", "1", "50.0", "<1s", WORKER]
    assert lines[5] == "(events/s over 1 s)"
    assert lines[7].split() == ["JOB", "TOPIC", "PARTITIONS", "LAG", "WORKERS"]
    assert lines[8].split() == ["normalize", RAW_TOPIC, "2", "1", "first@10.0.0.7"]
    assert lines[-1] == "All well."
    assert max(map(len, lines)) <= 120  # one screen wide


def test_the_table_lists_partitions_and_problems():
    data = snapshot({"normalize": group(offsets(0, None, 1500, owner=None), members=())}, {})

    text = render_table(assess(data, max_lag=1000), partitions=True)

    assert "JOB        TOPIC                  PARTITION  COMMITTED    END    LAG  WORKER" in text
    assert "normalize  whatsapp.webhooks.raw          0          -  1,500  1,500  -" in text
    assert text.endswith(
        "2 problems:\n"
        "  normalize: no worker in its consumer group whatsapp.normalize\n"
        "  normalize: lag 1,500 records, above 1,000"
    )


def test_json_has_the_verdict_and_every_detail():
    data = json.loads(render_json(assess(a_healthy_snapshot(), max_lag=1000)))

    assert data["ok"] is True
    assert data["at"] == "2026-05-28T20:26:40Z"
    assert (data["kafka"], data["topic_prefix"], data["max_lag"]) == ("127.0.0.1:9092",
                                                                      "whatsapp", 1000)  # fmt: skip
    ingest, normalize = data["services"]
    assert ingest == {
        "name": "ingest", "state": "ok", "ok": True, "problems": [],
        "endpoints": [{"url": INGESTER, "reachable": True, "ready": True, "error": None}],
        "events_per_second": 50.0, "rate_seconds": 1.0, "spool_records": 0,
    }  # fmt: skip
    assert normalize["lag"] == 1
    assert normalize["last_commit_seconds_ago"] == 1.0
    assert normalize["last_commit_bound"] == "<"
    assert normalize["group"]["members"] == [{
        "instance": "first", "host": "10.0.0.7",
        "partitions": [{"topic": RAW_TOPIC, "partition": 0}, {"topic": RAW_TOPIC, "partition": 1}],
    }]  # fmt: skip
    assert normalize["partitions"][1] == {
        "topic": RAW_TOPIC, "partition": 1, "committed": 80, "start": 0, "end": 81, "lag": 1,
        "worker": "first@10.0.0.7",
    }  # fmt: skip


def test_endpoints_default_to_where_wapipe_run_puts_the_services():
    settings = Settings(processor_web_port=7000, ingest_port=7100, ingest_host="0.0.0.0")

    assert endpoints(settings, Options()) == [
        ("ingest", "http://127.0.0.1:7100"),
        ("normalize", "http://127.0.0.1:7000"),
        ("funnel", "http://127.0.0.1:7001"),
        ("templates", "http://127.0.0.1:7002"),
        ("phones", "http://127.0.0.1:7003"),
        ("conversations", "http://127.0.0.1:7004"),
        ("limits", "http://127.0.0.1:7005"),
    ]
    chosen = Options(services=("funnel", "ingest"), ingester="https://in.example/",
                     workers={"funnel": ("http://a:1", "http://b:2")})  # fmt: skip
    assert endpoints(settings, chosen) == [
        ("funnel", "http://a:1"), ("funnel", "http://b:2"), ("ingest", "https://in.example"),
    ]  # fmt: skip
    assert endpoints(settings, Options(broker_only=True)) == []


# --------------------------------------------------------------------------- the command


def _wapipe(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wapipe", *args], env={**os.environ, **environment},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _status(settings: Settings, port: int, *flags: str) -> subprocess.CompletedProcess[str]:
    return _wapipe("status", "normalize", "--worker", f"normalize=127.0.0.1:{port}", *flags,
                   WAPIPE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
                   WAPIPE_TOPIC_PREFIX=settings.topic_prefix)  # fmt: skip


def _wait_ready(port: int, worker: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        try:
            url = f"http://127.0.0.1:{port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"the worker was not ready within {timeout:.0f} s"
        time.sleep(0.2)  # an HTTP endpoint: nothing to await on


def _wait_status(settings: Settings, port: int, condition: Any, what: str,
                 timeout: float = 60) -> dict[str, Any]:  # fmt: skip
    """Run `wapipe status --json` until its normalize service meets `condition`."""
    deadline = time.monotonic() + timeout
    while True:
        result = _status(settings, port, "--json", "--sample", "0")
        data = json.loads(result.stdout)
        [service] = data["services"]
        if condition(service):
            return dict(data, returncode=result.returncode)
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s: {service}"
        time.sleep(0.5)  # the broker's view settles: nothing to await on


async def _produce(settings: Settings, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for number in range(count):
            await producer.send_and_wait(
                RAW.name(settings.topic_prefix),
                b'{"eventId": "e-%d"}' % number,
                key=b"k%d" % number,
            )
    finally:
        await producer.stop()


@pytest.mark.kafka
@pytest.mark.slow
async def test_status_shows_a_running_worker_up_then_stopped_down(
    fresh_topics, start_worker, unused_port
):
    settings = await fresh_topics(2)
    port = unused_port()
    worker = start_worker("normalize", settings, WAPIPE_PROCESSOR_WEB_PORT=str(port))
    _wait_ready(port, worker)
    data = _wait_status(settings, port, lambda s: s["ok"], "normalize all well")

    assert data["returncode"] == EXIT_OK
    [normalize] = data["services"]
    assert normalize["state"] == "ok"
    [member] = normalize["group"]["members"]
    assert member["instance"] == "first"  # start_worker's WAPIPE_PROCESSOR_INSTANCE
    raw = RAW.name(settings.topic_prefix)
    assert sorted((p["topic"], p["partition"]) for p in member["partitions"]) == [
        (raw, 0), (raw, 1),
    ]  # fmt: skip
    table = _status(settings, port)
    assert table.returncode == EXIT_OK, table.stdout + table.stderr
    assert "normalize  ok           1  2/2" in table.stdout
    assert f"normalize  {raw}           2    0  first@127.0.0.1" in table.stdout
    assert table.stdout.rstrip().endswith("All well.")

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0

    down = _status(settings, port)
    assert down.returncode == EXIT_PROBLEM
    assert "normalize  down" in down.stdout
    assert (f"normalize: not running: no worker in its consumer group "
            f"{settings.topic_prefix}.normalize, and http://127.0.0.1:{port}: connection "
            "refused") in down.stdout  # fmt: skip


@pytest.mark.kafka
@pytest.mark.slow
async def test_status_shows_the_backlog_of_a_stopped_worker_as_lag(
    fresh_topics, start_worker, unused_port
):
    settings = await fresh_topics(2)
    port = unused_port()
    worker = start_worker("normalize", settings, WAPIPE_PROCESSOR_WEB_PORT=str(port))
    _wait_ready(port, worker)
    await _produce(settings, 5)
    _wait_status(settings, port,
                 lambda s: sum(p["committed"] or 0 for p in s["partitions"]) == 5,
                 "the first 5 records committed")  # fmt: skip
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0

    await _produce(settings, 7)

    result = _status(settings, port, "--json", "--max-lag", "3")
    assert result.returncode == EXIT_PROBLEM
    data = json.loads(result.stdout)
    [normalize] = data["services"]
    assert normalize["lag"] == 7
    assert normalize["state"] == "down"
    assert "normalize: lag 7 records, above 3" in data["problems"]
    assert sum(p["end"] - p["committed"] for p in normalize["partitions"]) == 7


@pytest.mark.kafka
async def test_status_of_a_running_ingester(kafka_settings, start_ingester):
    import asyncio

    async with start_ingester(kafka_settings) as ingester:
        status, _ = await ingester.post(b'{"eventId": "s-1", "eventType": "x"}')
        assert status == 200
        scraped = await asyncio.to_thread(scrape_ingester, ingester.url("").rstrip("/"))

    assert scraped.error is None
    assert (scraped.ready, scraped.spool_records, scraped.records) == (True, 0.0, 1.0)


def test_status_says_in_one_line_when_kafka_does_not_answer(unused_port):
    port = unused_port()

    result = _wapipe("status", WAPIPE_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}")

    assert result.returncode == EXIT_NO_KAFKA
    assert result.stderr.strip().splitlines() == [
        f"wapipe status: cannot reach Kafka at 127.0.0.1:{port}: connection refused — start "
        "it with `wapipe kafka up` or set WAPIPE_KAFKA_BOOTSTRAP"
    ]
    assert result.stdout == ""


def test_status_refuses_a_malformed_worker_flag():
    result = _wapipe("status", "--worker", "nonsense=127.0.0.1:1")

    assert result.returncode == 2
    assert "JOB=HOST:PORT" in result.stderr


def test_status_checks_an_https_ingester_against_the_ca_it_is_told_or_says_it_did_not(
    unused_port, tmp_path
):
    """An ingester serving HTTPS with a self-signed certificate (spooling: no broker)."""
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = unused_port()
    server = {
        "WAPIPE_KAFKA_BOOTSTRAP": f"127.0.0.1:{unused_port()}",
        "WAPIPE_INGEST_PORT": str(port),
        "WAPIPE_SPOOL_DIR": str(tmp_path / "spool"),
    }
    ingester = subprocess.Popen(
        [sys.executable, "-m", "wapipe", "ingest"],
        env={**os.environ, **server, "WAPIPE_TLS_CERT": str(certificate),
             "WAPIPE_TLS_KEY": str(key)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"

    def status(*flags: str) -> dict[str, Any]:
        result = _wapipe("status", "ingest", "--ingester", url, "--sample", "0", "--json",
                         *flags, **server)  # fmt: skip
        assert result.returncode in (0, 1), result.stderr
        return json.loads(result.stdout)

    try:
        deadline = time.monotonic() + 30
        while (found := status("--insecure"))["services"][0]["endpoints"][0]["error"]:
            assert time.monotonic() < deadline, f"the ingester never answered: {found}"
        unchecked = found
        trusted = status("--ca-file", str(certificate))
        refused = status()
    finally:
        ingester.send_signal(signal.SIGTERM)
        ingester.wait(timeout=30)

    assert unchecked["ingester_tls"] == "not verified (--insecure)"
    assert trusted["ingester_tls"] == f"verified against {certificate} (--ca-file)"
    assert trusted["services"][0]["endpoints"][0]["error"] is None
    assert refused["ingester_tls"] == "verified against the system's CAs"
    error = refused["services"][0]["endpoints"][0]["error"]
    assert "certificate" in error, error
    assert "--ca-file FILE" in error, error
    assert "--insecure" in error, error


def test_status_refuses_an_unreadable_ca_file(tmp_path):
    result = _wapipe("status", "ingest", "--ingester", "https://127.0.0.1:1", "--ca-file",
                     str(tmp_path / "missing.pem"), "--sample", "0")  # fmt: skip
    assert result.returncode == 2
    assert "cannot read the CA file" in result.stderr
    assert "(--ca-file)" in result.stderr
