"""The pipelined Redis client (`aisix.limits.resp`) against a real redis-server and sentinel.

Pipelining keeps replies in order under concurrency; AUTH, SELECT and the sentinel's master
discovery happen on connect; EVALSHA falls back to EVAL; a silent or garbled server and a
restart are survived with `RedisUnavailable` and a reconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from aisix.limits.resp import (
    RedisClient,
    RedisUnavailable,
    ReplyError,
    Script,
    encode_command,
    parse_reply,
)
from aisix.settings import RedisConn
from fakes.redis_server import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path / "redis").start()
    yield redis
    redis.stop()


def test_reply_parsing_and_command_encoding() -> None:
    raw = b"*3\r\n:7\r\n$3\r\nabc\r\n*2\r\n$-1\r\n-ERR no\r\n+OK\r\n"
    value, pos = parse_reply(raw, 0)
    assert value[:2] == [7, b"abc"]
    assert value[2][0] is None and str(value[2][1]) == "ERR no"
    assert parse_reply(raw, pos) == (b"OK", len(raw))
    for cut in range(1, pos):  # every truncation is "incomplete", never a wrong value
        with pytest.raises(Exception) as err:
            parse_reply(raw[:cut], 0)
        assert type(err.value).__name__ == "_Incomplete"
    assert encode_command(("SET", "k", 5, b"\x00")) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$1\r\n\x00\r\n"
    )


async def test_concurrent_commands_are_pipelined_and_answered_in_order(
    server: RedisServer,
) -> None:
    client = RedisClient(RedisConn(url=server.url))
    replies = await asyncio.gather(*(client.execute("INCR", "n") for _ in range(500)))
    assert replies == list(range(1, 501))
    with pytest.raises(ReplyError, match=r"WRONGTYPE|not an integer"):
        await client.execute("HINCRBY", "n", "f", 1)
    assert await client.execute("GET", "n") == b"500"  # the error did not break the stream
    await client.close()


async def test_evalsha_loads_an_unknown_script(server: RedisServer) -> None:
    client = RedisClient(RedisConn(url=server.url))
    script = Script("return {KEYS[1], ARGV[1] + 1}")
    assert await client.execute("SCRIPT", "FLUSH") == b"OK"
    assert await client.evalsha(script, ["k"], [41]) == [b"k", 42]  # NOSCRIPT, then EVAL
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
    assert await client.evalsha(script, ["j"], [1]) == [b"j", 2]
    await client.close()


async def test_password_and_database_from_url_or_settings(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "auth", extra_args=("--requirepass", "s3cret")).start()
    try:
        by_url = RedisClient(RedisConn(url=f"redis://:s3cret@127.0.0.1:{redis.port}/3"))
        await by_url.execute("SET", "where", "db3")
        by_setting = RedisClient(
            RedisConn(url=f"redis://127.0.0.1:{redis.port}", password="s3cret", database=3)
        )
        assert await by_setting.execute("GET", "where") == b"db3"
        db0 = RedisClient(RedisConn(url=f"redis://127.0.0.1:{redis.port}", password="s3cret"))
        assert await db0.execute("GET", "where") is None
        wrong = RedisClient(RedisConn(url=f"redis://:nope@127.0.0.1:{redis.port}/0"))
        with pytest.raises(RedisUnavailable, match=r"WRONGPASS|invalid"):
            await wrong.execute("PING")
        for client in (by_url, by_setting, db0, wrong):
            await client.close()
    finally:
        redis.stop()


async def test_a_restarted_server_is_reconnected(server: RedisServer) -> None:
    client = RedisClient(RedisConn(url=server.url))
    assert await client.execute("PING") == b"PONG"
    server.stop()
    with pytest.raises(RedisUnavailable):
        await client.execute("PING")
    server.start()
    assert await client.execute("PING") == b"PONG"
    await client.close()


async def test_a_silent_or_garbled_server_is_unavailable_within_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()  # the client hung up: close our side too, not at garbage collection

    async def garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"!what\r\n")
        await reader.read()
        writer.close()

    for handler, message in ((silent, "in time"), (garbled, "malformed")):
        tcp = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        client = RedisClient(RedisConn(url=f"redis://127.0.0.1:{port}", socket_timeout_ms=200))
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            client.execute("PING"), client.execute("PING"), return_exceptions=True
        )
        assert all(isinstance(r, RedisUnavailable) and message in str(r) for r in results)
        assert asyncio.get_running_loop().time() - started < 1.0
        await client.close()
        tcp.close()
        await tcp.wait_closed()


async def test_sentinel_mode_finds_the_master(server: RedisServer, tmp_path: Path) -> None:
    sentinel = RedisServer(tmp_path / "sentinel", sentinel_for=server).start()
    try:
        conn = RedisConn(
            mode="sentinel",
            sentinels=["127.0.0.1:1", f"127.0.0.1:{sentinel.port}"],  # the first is down
            master_name="mymaster",
        )
        client = RedisClient(conn)
        await client.execute("SET", "via", "sentinel")
        direct = RedisClient(RedisConn(url=server.url))
        assert await direct.execute("GET", "via") == b"sentinel"
        unknown = RedisClient(conn.model_copy(update={"master_name": "other"}))
        with pytest.raises(RedisUnavailable, match="no master named 'other'"):
            await unknown.execute("PING")
        for c in (client, direct, unknown):
            await c.close()
    finally:
        sentinel.stop()


def test_bad_redis_settings_are_refused_before_connecting() -> None:
    for conn, message in (
        ({"url": "http://127.0.0.1:6379"}, "scheme must be redis, rediss or unix"),
        ({"mode": "sentinel", "sentinels": ["127.0.0.1"], "master_name": "m"}, "not host:port"),
        ({"mode": "cluster", "nodes": ["127.0.0.1:7000"]}, "cluster is not supported"),
    ):
        with pytest.raises(ValueError, match=message):
            RedisConn(**conn)
    with pytest.raises(ValueError, match="database 'zero' is not a number"):
        RedisClient(RedisConn(url="redis://127.0.0.1:6379/zero"))
