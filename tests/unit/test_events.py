"""The event bus: deferred events are built only when delivered, and delivered together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aisix.events import DEFER_SECONDS, EventBus, RequestFinished


def event(n: int) -> RequestFinished:
    return RequestFinished(
        event_id=f"e{n}",
        request_id=f"r{n}",
        ts=0.0,
        endpoint="/v1/chat/completions",
        method="POST",
        path="/v1/chat/completions",
        stream=False,
        status=200,
        outcome="success",
        latency_ms=1.0,
        client_ip=None,
    )


def test_deferred_events_are_built_once_and_delivered_together() -> None:
    got: list[str] = []
    built: list[int] = []

    def builder(n: int) -> Callable[[], RequestFinished]:
        def make() -> RequestFinished:
            built.append(n)
            return event(n)

        return make

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(lambda e: got.append(e.request_id))
        bus.publish_deferred(builder(1))
        bus.publish_deferred(builder(2))
        assert got == [] and built == []  # nothing is built or delivered on the request path
        await asyncio.sleep(DEFER_SECONDS * 5)
        assert got == ["r1", "r2"] and built == [1, 2]
        bus.publish_deferred(builder(3))
        bus.flush()  # shutdown delivers what is queued at once
        assert got == ["r1", "r2", "r3"]

    asyncio.run(main())


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    got: list[str] = []
    bus = EventBus()

    def broken(_: RequestFinished) -> None:
        raise RuntimeError("sink down")

    bus.subscribe(broken)
    bus.subscribe(lambda e: got.append(e.request_id))
    bus.publish(event(7))
    assert got == ["r7"]
