"""The bench's adapter rows work end to end, without running the bench: the real gateway,
started and provisioned by bench/targets.py exactly as `bench/run.py` does for each adapter
row, in front of the bench's real nginx, answers the official SDKs with the fixed answer
translated (or relayed) from each family's fixed bodies, streamed and not, with the usage of
the fixed body; and the stream probe times the first content chunk of each. The Gemini row
either works the same way or, on a gateway without the gemini adapter, is refused at start
with the 501 the gateway answers."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import fixtures  # noqa: E402
import targets  # noqa: E402
from families import FAMILIES  # noqa: E402
from load import run_probe  # noqa: E402
from procs import ProcessGroup  # noqa: E402
from upstreams import StartError, start_nginx  # noqa: E402

STREAMED = "".join(f"tok{i} " for i in range(8))
HAS_GEMINI = importlib.util.find_spec("aisix.providers.gemini") is not None


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path, ProcessGroup]]:
    workdir = tmp_path_factory.mktemp("bench-rows")
    group = ProcessGroup(workdir)
    binary = Path(sys.executable).parent / "aisix"  # this interpreter's gateway
    with pytest.MonkeyPatch.context() as patch:
        # as `AISIX_BIN=... bench/run.py` sets it: the gateway must not read it as a setting
        patch.setenv("AISIX_BIN", str(binary))
        patch.setattr(targets, "AISIX_BIN", binary)
        try:
            nginx = start_nginx(group, workdir, None)
            bases = targets.UpstreamBases(
                static=f"{nginx.root}/v1",
                sse=f"{nginx.root}/stream/v1",
                paced=f"{nginx.root}/unused/v1",
                slow=f"{nginx.root}/unused/v1",
                nginx=nginx.root,
            )
            yield bases, workdir, group
        finally:
            group.stop_all()


def start(bench: tuple[Any, Path, ProcessGroup], name: str) -> targets.Target:
    bases, workdir, group = bench
    variant = targets.AisixVariant(name.removeprefix("aisix-"), governance=True)
    return targets.start_aisix(group, bases, variant, workdir, None, FAMILIES[name])


def root_of(target: targets.Target) -> str:
    return target.urls["static"].split("/v1/")[0]


def probe(target: targets.Target) -> dict[str, Any]:
    return run_probe(
        "ttft",
        target.urls["sse"],
        target.models["sse"],
        target.key,
        count=3,
        cpus=None,
        timeout=30,
        warmup=0,
        fmt=target.stream_format,
    )


@pytest.mark.parametrize("name", ["aisix-anthropic", "aisix-bedrock", "aisix-gemini"])
def test_openai_in_translated_row(bench: tuple[Any, Path, ProcessGroup], name: str) -> None:
    if name == "aisix-gemini" and not HAS_GEMINI:
        # a gateway without the gemini adapter: the row is refused with the 501 it answers
        with pytest.raises(StartError, match="answers 501 for adapter 'gemini'"):
            start(bench, name)
        return
    target = start(bench, name)
    assert target.info["upstream_wire"] == FAMILIES[name].wire
    client = openai.OpenAI(base_url=root_of(target) + "/v1", api_key=target.key, max_retries=0)
    answer = client.chat.completions.create(
        model="bench-model", messages=[{"role": "user", "content": fixtures.PROMPT}]
    )
    assert answer.choices[0].message.content == fixtures.ANSWER_TEXT
    assert answer.model == "bench-model"
    assert answer.usage is not None and answer.usage.completion_tokens == 7
    text, usage = "", None
    for chunk in client.chat.completions.create(
        model="bench-sse",
        messages=[{"role": "user", "content": fixtures.PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        text += "".join(c.delta.content or "" for c in chunk.choices)
        usage = chunk.usage or usage
    assert text == STREAMED
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (14, 8)
    timed = probe(target)
    assert (timed["streams"], timed["errors"]) == (3, 0)
    assert timed["ttft_ms"]["p50"] is not None


def test_anthropic_native_row(bench: tuple[Any, Path, ProcessGroup]) -> None:
    target = start(bench, "aisix-anthropic-native")
    assert target.urls["sse"].endswith("/v1/messages") and target.stream_format == "anthropic"
    client = anthropic.Anthropic(base_url=root_of(target), api_key=target.key, max_retries=0)
    message = client.messages.create(
        model="bench-model",
        max_tokens=32,
        messages=[{"role": "user", "content": fixtures.PROMPT}],
    )
    assert [block.text for block in message.content] == [fixtures.ANSWER_TEXT]  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (14, 7)
    with client.messages.stream(
        model="bench-sse",
        max_tokens=32,
        messages=[{"role": "user", "content": fixtures.PROMPT}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == STREAMED
    assert final.usage.output_tokens == 8 and final.stop_reason == "end_turn"
    timed = probe(target)
    assert (timed["streams"], timed["errors"], timed["chunks_per_stream"]) == (3, 0, 8.0)
