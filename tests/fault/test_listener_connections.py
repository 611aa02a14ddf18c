"""Connection caps and slow readers (issue 12 item 5): what a crowd of idle or non-reading
clients can no longer do to a real `aisix` subprocess.

The proxy's connection cap refuses with 503 and closes; under a 1,024 descriptor limit 1,100
idle proxy connections leave the admin listener answering; a streaming client that stops
reading is cut after `listener.write_timeout_secs`, its upstream stream closed and its hold
released; and the gateway's peak RSS with many such clients stays within a per-client bound.
"""

from __future__ import annotations

import contextlib
import re
import resource
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from e2e_helpers import (
    ALIAS,
    CALLER_KEY,
    Gateway,
    GatewayFactory,
    http_request,
    parse_raw_response,
    wait_for,
)

from fakes.endless_stream import EndlessStream
from fakes.openai_upstream import FakeOpenAIUpstream, Reply

#: runs aisix with the open-file limit the probe used
FD_LIMITED = [
    sys.executable,
    "-c",
    "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)); "
    "sys.argv[0] = 'aisix'; runpy.run_module('aisix', run_name='__main__')",
]


@pytest.fixture
def endless() -> Iterator[EndlessStream]:
    upstream = EndlessStream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


def _connect(gw: Gateway, listener: str = "proxy") -> socket.socket:
    port = gw.proxy_port if listener == "proxy" else gw.admin_port
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_all(sock: socket.socket, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return received
        if not chunk:
            return received
        received += chunk


def test_connections_over_the_cap_get_503_and_are_closed(gateway: GatewayFactory) -> None:
    gw = gateway({"listener": {"max_connections": {"proxy": 10}}})
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(_connect(gw)) for _ in range(10)]
        wait_for(lambda: _refused(gw), 5, "the 11th connection to be refused")
        with _connect(gw) as extra:
            response = parse_raw_response(_read_all(extra))
        assert response.status == 503
        assert response.headers["retry-after"] == "1"
        error = orjson.loads(response.body)["error"]
        assert error["code"] == "too_many_connections", error
        assert "limit 10" in error["message"]
        admin = http_request("GET", gw.admin_url + "/livez")
        assert admin.status == 200  # the admin listener has its own cap
        idle.pop().close()
        wait_for(lambda: not _refused(gw), 5, "a freed slot to be usable again")


def _refused(gw: Gateway) -> bool:
    """True when a new proxy connection is answered 503."""
    try:
        with _connect(gw) as sock:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return _read_all(sock).startswith(b"HTTP/1.1 503")
    except OSError:
        return False


def test_1100_idle_proxy_connections_under_a_1024_fd_limit_leave_admin_up(
    gateway: GatewayFactory,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:  # this process holds 1,100 sockets
        keep = hard == resource.RLIM_INFINITY or hard >= 4096  # else raise it (root may)
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard if keep else 4096))
    gw = gateway(start=False)
    gw.command = FD_LIMITED
    gw.start()
    opened: list[socket.socket] = []
    try:
        for _ in range(1100):
            opened.append(_connect(gw))
        # the newest connections are over the proxy's automatic cap (half of what 1,024
        # descriptors leave): answered 503, so the proxy has seen all of them by now
        refused = sum(1 for sock in opened[-100:] if _read_all(sock, 2).startswith(b"HTTP/1.1 503"))
        assert refused == 100, refused
        # the proxy holds every connection it may; the admin and status listeners still work
        response = gw.admin("GET", "/models")
        assert response.status == 200, response
        assert http_request("GET", gw.status_url + "/status/ready").status == 200
    finally:
        for sock in opened:
            sock.close()
    wait_for(lambda: http_request("GET", gw.proxy_url + "/livez").status == 200, 10, "proxy")


def _start_non_reading_stream(gw: Gateway) -> socket.socket:
    """A streaming chat request from a client that reads the response head, then nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((gw.proxy_host, gw.proxy_port))
    body = orjson.dumps(
        {"model": ALIAS, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    )
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + CALLER_KEY.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1024)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def _in_flight(gw: Gateway) -> float:
    return gw.metric("aisix_proxy_in_flight_requests")


def test_a_stream_client_that_stops_reading_is_cut_and_its_hold_released(
    gateway: GatewayFactory, endless: EndlessStream
) -> None:
    gw = gateway({"listener": {"write_timeout_secs": 1, "write_buffer_bytes": 16384}})
    gw.seed(endless.url)
    with _start_non_reading_stream(gw) as sock:
        wait_for(lambda: endless.counts()[0] == 1, 5, "the upstream stream to start")
        assert _in_flight(gw) == 1
        wait_for(lambda: _in_flight(gw) == 0, 10, "the stuck stream to be cut", every=0.2)
        wait_for(lambda: endless.counts()[1:] == (0, 1), 5, "the upstream stream to be closed")
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(1 << 20):  # what was buffered, then the cut
                pass
    gw.assert_alive()


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_peak_rss_with_300_non_reading_stream_clients_is_bounded(
    gateway: GatewayFactory, endless: EndlessStream
) -> None:
    clients = 300
    gw = gateway({"listener": {"write_timeout_secs": 2}})
    gw.seed(endless.url)
    assert gw.process is not None
    before = _peak_rss_kib(gw.process.pid)
    with contextlib.ExitStack() as stack:
        for _ in range(clients):
            stack.enter_context(_start_non_reading_stream(gw))
        wait_for(lambda: endless.counts()[0] == clients, 10, "every upstream stream to start")
        wait_for(lambda: _in_flight(gw) == 0, 15, "every stuck stream to be cut", every=0.25)
        wait_for(lambda: endless.counts()[1] == 0, 5, "every upstream stream to be closed")
        growth_kib = _peak_rss_kib(gw.process.pid) - before
    per_client_kib = growth_kib / clients
    print(f"peak RSS growth {growth_kib} KiB for {clients} clients: {per_client_kib:.0f} KiB each")
    # measured ~430 KiB: the 64 KiB write buffer, the upstream reader's 64 KiB high-water
    # mark plus one socket read (up to 256 KiB), and the relay's copy (~800 KiB at 256 KiB)
    assert per_client_kib < 600, per_client_kib
    gw.assert_alive()


def test_a_pipelined_request_waiting_behind_a_slow_one_is_not_timed_out(
    gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream
) -> None:
    """While the server itself has stopped reading (a pipelined request waits its turn), the
    body deadline is not the client's fault: both requests are answered 200, in order."""
    gw = gateway({"listener": {"body_read_timeout_secs": 1}})
    gw.seed(fake_openai.url)
    fake_openai.script(Reply(delay_s=2.5))
    body = orjson.dumps({"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]})
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (CALLER_KEY.encode(), len(body))
    )
    with _connect(gw) as sock:
        sock.sendall(head + body + head)  # the second request's body comes later
        time.sleep(0.2)
        sock.sendall(body)
        sock.settimeout(10)
        received = b""
        while received.count(b"HTTP/1.1 ") < 2 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200", b"200"], received
