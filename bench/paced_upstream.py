"""Paced SSE upstream: an OpenAI-style chat stream with N chunks at fixed intervals.

`POST /p/{chunks}/{interval_ms}/v1/chat/completions` answers `text/event-stream`: the first
chunk right after the headers, then one chunk every `interval_ms`, then a usage chunk and
`data: [DONE]`. A gateway's api_base can point at `http://127.0.0.1:PORT/p/20/10/v1`.
Pacing dominates here, so Python (aiohttp on uvloop) is fast enough; `GET /healthz` answers 200.
Run: python bench/paced_upstream.py --port 9000
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from fixtures import chunk_event, completion_json, usage_event


async def paced_stream(request: web.Request) -> web.StreamResponse:
    chunks = int(request.match_info["chunks"])
    interval = int(request.match_info["interval_ms"]) / 1000.0
    await request.read()
    response = web.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index in range(chunks):
        if index:
            # schedule against the start time so pacing does not drift
            await asyncio.sleep(max(0.0, start + index * interval - loop.time()))
        await response.write(chunk_event(index, f"tok{index} ", finish=index == chunks - 1))
    await response.write(usage_event(chunks))
    await response.write_eof()
    return response


async def static_json(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=completion_json().encode(), content_type="application/json")


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/p/{chunks:\\d+}/{interval_ms:\\d+}/v1/chat/completions", paced_stream)
    app.router.add_post("/v1/chat/completions", static_json)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        build_app(), host=args.host, port=args.port, access_log=None, print=None, backlog=4096
    )


if __name__ == "__main__":
    main()
