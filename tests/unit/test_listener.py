"""Unit tests of `aisix.listener`: the automatic proxy cap, the guard's timer period, the
listener settings' bounds and the envelopes of server-level refusals."""

from __future__ import annotations

import resource

import orjson
import pytest
from pydantic import ValidationError

from aisix.listener import FD_RESERVE, Guard, Refusal, auto_proxy_cap, render_error_msg
from aisix.proxy.server import render_refusal
from aisix.settings import ListenerSettings


def test_auto_proxy_cap_is_half_of_what_the_fd_limit_leaves() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        assert auto_proxy_cap(128) == 100_000
    else:
        assert auto_proxy_cap(128) == max(16, (soft - 128 - FD_RESERVE) // 2)
        assert auto_proxy_cap(10**9) == 16  # never below a usable floor


def test_guard_ticks_at_a_quarter_of_the_smallest_timeout_at_most_each_second() -> None:
    render = render_error_msg
    fast = ListenerSettings(header_read_timeout_secs=1, body_read_timeout_secs=2)
    assert Guard("proxy", fast, 10, render).tick_s == 0.25
    assert Guard("proxy", ListenerSettings(), 10, render).tick_s == 1.0
    off = ListenerSettings(
        header_read_timeout_secs=0, body_read_timeout_secs=0, write_timeout_secs=0
    )
    assert Guard("proxy", off, 10, render).tick_s == 1.0
    tiny = ListenerSettings(header_read_timeout_secs=0.01)
    assert Guard("proxy", tiny, 10, render).tick_s == 0.05


def test_protocol_classes_are_bound_to_their_guard() -> None:
    a = Guard("proxy", ListenerSettings(), 1, render_error_msg)
    b = Guard("admin", ListenerSettings(), 2, render_error_msg)
    assert a.protocol_class().guard is a
    assert b.protocol_class().guard is b


@pytest.mark.parametrize(
    "field, value",
    [
        ("header_read_timeout_secs", -1),
        ("max_header_bytes", 10),
        ("max_headers", 0),
        ("write_buffer_bytes", 10),
    ],
)
def test_listener_settings_are_bounded(field: str, value: int) -> None:
    with pytest.raises(ValidationError):
        ListenerSettings.model_validate({field: value})


def test_refusals_render_in_each_listeners_envelope() -> None:
    refusal = Refusal(431, "request head exceeds 65536-byte limit", "too_big", "/v1/messages")
    body, headers = render_refusal(refusal)
    anthropic = orjson.loads(body)
    assert anthropic["type"] == "error" and "65536" in anthropic["error"]["message"]
    assert dict(headers)[b"content-type"] == b"application/json"
    assert b"x-aisix-request-id" in dict(headers)
    body, _ = render_refusal(Refusal(503, "too many connections", "too_many_connections"))
    openai = orjson.loads(body)["error"]
    assert openai == {
        "message": "too many connections",
        "type": "service_unavailable",
        "code": "too_many_connections",
    }
    body, _ = render_error_msg(refusal)
    assert orjson.loads(body) == {"error_msg": "request head exceeds 65536-byte limit"}
