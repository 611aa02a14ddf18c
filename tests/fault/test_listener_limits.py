"""Listener limits on the proxy, admin and status listeners (issue 12 items 5 and 9).

Each test drives a real `aisix` subprocess with raw sockets that misbehave the way the probe
did: a slowloris dripping its head, a body that never finishes, a 1 MB header, 100,000
headers, more connections than the cap, malformed request lines. Every answer the server
gives on its own must be in the listener's envelope and end the connection.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson
import pytest
from e2e_helpers import (
    ADMIN_KEY,
    Gateway,
    GatewayFactory,
    HttpResponse,
    http_request,
    parse_raw_response,
)

LISTENERS = ["proxy", "admin", "status"]


def _addr(gw: Gateway, listener: str) -> tuple[str, int]:
    return {
        "proxy": (gw.proxy_host, gw.proxy_port),
        "admin": (gw.admin_host, gw.admin_port),
        "status": (gw.status_host, gw.status_port),
    }[listener]


def _read_some(sock: socket.socket, received: bytearray) -> bool:
    """One read (up to the socket's timeout) into `received`; False once the server closed or
    reset the connection."""
    try:
        chunk = sock.recv(65536)
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False
    received.extend(chunk)
    return bool(chunk)


def _read_until_closed(sock: socket.socket, deadline_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; fails if it is still open at the deadline."""
    start = time.monotonic()
    received = bytearray()
    while True:
        left = deadline_s - (time.monotonic() - start)
        if left <= 0:
            raise AssertionError(f"connection still open after {deadline_s}s: {bytes(received)!r}")
        sock.settimeout(left)
        if not _read_some(sock, received):
            return bytes(received), time.monotonic() - start


def _assert_envelope(listener: str, response: HttpResponse, status: int) -> Any:
    assert response.status == status, (response.status, response.body)
    assert response.headers.get("connection") == "close", response.headers
    body = orjson.loads(response.body)
    if listener == "proxy":
        assert set(body) == {"error"}, body
        assert body["error"]["message"], body
        assert "x-aisix-request-id" in response.headers
        return body["error"]
    assert set(body) == {"error_msg"}, body
    return body


@pytest.fixture
def tight(gateway: GatewayFactory) -> Gateway:
    """A gateway with short read deadlines, so the tests stay well under 20 s."""
    return gateway({"listener": {"header_read_timeout_secs": 1, "body_read_timeout_secs": 1}})


@pytest.mark.parametrize("listener", LISTENERS)
def test_slowloris_is_cut_at_the_header_read_timeout(tight: Gateway, listener: str) -> None:
    head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    with socket.create_connection(_addr(tight, listener), timeout=5) as sock:
        start = time.monotonic()
        sent = 0
        received = bytearray()
        sock.settimeout(0.25)
        while time.monotonic() - start < 8:  # one byte every 0.25 s: the head never ends
            try:
                sock.send(head[sent : sent + 1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                break
            if not _read_some(sock, received):
                break
        elapsed = time.monotonic() - start
        rest, _ = _read_until_closed(sock, 3)
    assert elapsed < 4, f"slowloris still connected after {elapsed:.1f}s ({sent} bytes sent)"
    error = _assert_envelope(listener, parse_raw_response(bytes(received) + rest), 408)
    if listener == "proxy":
        assert error["code"] == "request_timeout"


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_connection_that_sends_nothing_is_closed(tight: Gateway, listener: str) -> None:
    with socket.create_connection(_addr(tight, listener), timeout=5) as sock:
        raw, elapsed = _read_until_closed(sock, 5)
    assert elapsed < 4
    _assert_envelope(listener, parse_raw_response(raw), 408)


def test_an_unfinished_body_is_cut_at_the_body_read_timeout(tight: Gateway) -> None:
    head = (
        b"POST /admin/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" % ADMIN_KEY.encode()
    )
    with socket.create_connection(_addr(tight, "admin"), timeout=5) as sock:
        sock.sendall(head + b'{"display_name": ')
        raw, elapsed = _read_until_closed(sock, 5)
    assert elapsed < 4
    error = _assert_envelope("admin", parse_raw_response(raw), 408)
    assert "body" in error["error_msg"]
    tight.assert_alive()


def test_a_body_left_unfinished_after_an_early_answer_is_cut(tight: Gateway) -> None:
    """The proxy answers 401 before reading the body; the rest never comes: cut, not kept."""
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with socket.create_connection(_addr(tight, "proxy"), timeout=5) as sock:
        sock.sendall(head + b'{"model": ')
        raw, elapsed = _read_until_closed(sock, 5)
    assert elapsed < 4
    assert parse_raw_response(raw).status == 401


def test_keep_alive_connection_between_requests_is_not_cut_by_the_header_timeout(
    tight: Gateway,
) -> None:
    """After a complete request the idle time is `downstream.idle_timeout_secs` (0 = never)."""
    with socket.create_connection(_addr(tight, "proxy"), timeout=5) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _read_response(sock)
        assert first.startswith(b"HTTP/1.1 200"), first
        time.sleep(2.5)  # longer than the header timeout, idle between requests
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        second = _read_response(sock)
    assert second.startswith(b"HTTP/1.1 200"), second


def _read_response(sock: socket.socket) -> bytes:
    """One chunked response (the health endpoints' shape), read to its last chunk."""
    received = b""
    while not received.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {received!r}"
        received += chunk
    return received


def _send_and_collect(addr: tuple[str, int], payload: bytes, deadline_s: float = 10) -> bytes:
    """Send `payload` while reading; stop at the server's close (it may answer early)."""
    received = bytearray()
    view = memoryview(payload)
    start = time.monotonic()
    with socket.create_connection(addr, timeout=5) as sock:
        sock.settimeout(0.05)
        sent = 0
        while time.monotonic() - start < deadline_s:
            if sent < len(view):
                try:
                    sent += sock.send(view[sent : sent + 262144])
                except (BrokenPipeError, ConnectionResetError):
                    sent = len(view)
                except TimeoutError:
                    pass
            if not _read_some(sock, received):
                break
        else:
            raise AssertionError(f"connection still open after {deadline_s}s")
    return bytes(received)


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_1mb_header_is_refused_with_431(gateway: GatewayFactory, listener: str) -> None:
    gw = gateway()
    head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
    error = _assert_envelope(
        listener, parse_raw_response(_send_and_collect(_addr(gw, listener), head)), 431
    )
    if listener == "proxy":
        assert error["code"] == "request_header_fields_too_large"
    gw.assert_alive()


def test_a_large_header_in_one_packet_is_refused(gateway: GatewayFactory) -> None:
    """A head over the limit that arrives (and completes) in one read is refused too."""
    gw = gateway({"listener": {"max_header_bytes": 4096}})
    head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    raw = _send_and_collect(_addr(gw, "proxy"), head)
    _assert_envelope("proxy", parse_raw_response(raw), 431)


@pytest.mark.parametrize("listener", LISTENERS)
def test_100000_headers_are_refused_with_431(gateway: GatewayFactory, listener: str) -> None:
    gw = gateway()
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(100_000))
    head = b"GET /livez HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"
    raw = _send_and_collect(_addr(gw, listener), head)
    error = _assert_envelope(listener, parse_raw_response(raw), 431)
    if listener == "proxy":
        assert "headers" in error["message"]


def test_101_small_headers_are_refused_and_100_accepted(gateway: GatewayFactory) -> None:
    gw = gateway()
    for count, status in ((98, 200), (99, 431)):  # Host, Connection and `count` more
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(count))
        head = b"GET /livez HTTP/1.1\r\nHost: x\r\n" + lines + b"Connection: close\r\n\r\n"
        raw = _send_and_collect(_addr(gw, "proxy"), head)
        assert parse_raw_response(raw).status == status, (count, raw[:200])


def test_malformed_requests_answer_in_the_envelope(gateway: GatewayFactory) -> None:
    gw = gateway()
    cases = [
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "bad_request"),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"BREW /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", 405, "unknown_route"),
    ]
    for payload, status, code in cases:
        error = _assert_envelope(
            "proxy", parse_raw_response(_send_and_collect(_addr(gw, "proxy"), payload)), status
        )
        assert error["code"] == code, (payload, error)
        assert error["type"] == "invalid_request_error"
    for listener in ("admin", "status"):
        raw = _send_and_collect(_addr(gw, listener), b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n")
        _assert_envelope(listener, parse_raw_response(raw), 405)
    gw.assert_alive()


def test_malformed_anthropic_request_answers_in_the_anthropic_envelope(
    gateway: GatewayFactory,
) -> None:
    gw = gateway()
    payload = b"BREW /v1/messages HTTP/1.1\r\nHost: x\r\n\r\n"
    response = parse_raw_response(_send_and_collect(_addr(gw, "proxy"), payload))
    assert response.status == 405
    body = orjson.loads(response.body)
    assert body["type"] == "error", body
    assert "BREW" in body["error"]["message"], body


@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_health_endpoints_carry_the_request_id(gateway: GatewayFactory, path: str) -> None:
    gw = gateway()
    response = http_request("GET", gw.proxy_url + path, headers={"x-request-id": "probe-1"})
    assert response.status == 200
    assert response.headers["x-aisix-request-id"] == "probe-1"
    assert response.headers["request-id"] == "probe-1"
    fresh = http_request("GET", gw.proxy_url + path)
    assert len(fresh.headers["x-aisix-request-id"]) == 36  # a new UUIDv4
