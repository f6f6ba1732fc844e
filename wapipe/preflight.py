"""Checks a command makes before it starts anything: is a port free, does Kafka answer.

Each failure is one line that names the cause and the way out, for the errors a
newcomer meets first (a port taken by a second `wapipe run`, no broker running).
"""

from __future__ import annotations

import errno
import logging
import socket

from wapipe.local_kafka import probe

KAFKA_HINT = "start it with `wapipe kafka up` or set WAPIPE_KAFKA_BOOTSTRAP"


def port_taken(host: str, port: int) -> bool:
    """True when another process listens on `host:port` (a bind would fail there).

    Binds as aiohttp and http.server do, with SO_REUSEADDR, so a port whose last
    connections linger in TIME_WAIT counts as free. Other bind errors (an address
    not on this machine) are left to the server, whose message says so.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def port_taken_message(port: int, host: str, whose: str, setting: str) -> str:
    return (
        f"port {port} ({whose}, on {host}) is taken by another process: stop it "
        f"(another `wapipe run`?), or choose another port with {setting}"
    )


def cannot_reach_kafka(bootstrap: str, reason: str) -> str:
    """The one line for a broker that does not answer."""
    return f"cannot reach Kafka at {bootstrap}: {reason} — {KAFKA_HINT}"


def kafka_problem(bootstrap: str, timeout: float = 10.0) -> str | None:
    """None when the cluster at `bootstrap` answers a metadata request, else the one line
    that says it does not (see `cannot_reach_kafka`)."""
    reason = tcp_problem(bootstrap, min(timeout, 5.0))
    if reason is None:
        # aiokafka logs its failures too: not on a terminal that gets this one line.
        logging.getLogger("aiokafka").addHandler(logging.NullHandler())
        reason = probe(bootstrap, timeout=timeout)
    if reason is None:
        return None
    return cannot_reach_kafka(bootstrap, reason)


def tcp_problem(bootstrap: str, timeout: float = 5.0) -> str | None:
    """None when one of the bootstrap servers accepts a TCP connection, else why none did
    (e.g. "connection refused")."""
    reason = "no bootstrap server given"
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
        except ValueError:
            reason = f"{server.strip()!r} is not host:port"
        except OSError as error:
            reason = describe_os_error(error)
        else:
            return None
    return reason


def describe_os_error(error: OSError) -> str:
    """`[Errno 111] Connection refused` -> `connection refused`."""
    text = error.strerror or str(error) or type(error).__name__
    return text[:1].lower() + text[1:]
