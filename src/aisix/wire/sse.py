"""Incremental server-sent-events parsing (the framing every JSON-streaming family uses).

`SSEDecoder.feed` returns complete events as `SSEEvent(event, data)`, keeping the `event:`
name (Anthropic and the Responses API name their events; OpenAI and Gemini send data only).
`payloads` is the fast path for data-only families: it skips building event objects. Lines
may end with LF, CRLF or CR, also split across reads; comments and `id:`/`retry:` are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str | None
    data: bytes


class SSEDecoder:
    __slots__ = ("_buf", "_cr")

    def __init__(self) -> None:
        self._buf = b""
        self._cr = False  # the previous read ended with CR: a leading LF completes that CRLF

    def _blocks(self, data: bytes) -> list[bytes]:
        """The complete event blocks (lines joined by LF) in the buffer plus `data`."""
        if self._cr and data.startswith(b"\n"):
            data = data[1:]
        self._cr = data.endswith(b"\r")
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + data if self._buf else data
        blocks: list[bytes] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            blocks.append(buf[start:end])
            start = end + 2
        self._buf = buf[start:]
        return blocks

    def payloads(self, data: bytes) -> list[bytes]:
        """The joined `data:` payload of each complete event (names dropped)."""
        out: list[bytes] = []
        for block in self._blocks(data):
            if block.startswith(b"data:") and b"\n" not in block:
                out.append(block[5:].lstrip(b" "))
                continue
            lines = [ln[5:].lstrip(b" ") for ln in block.split(b"\n") if ln.startswith(b"data:")]
            if lines:
                out.append(b"\n".join(lines))
        return out

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Complete events, with their names."""
        out: list[SSEEvent] = []
        for block in self._blocks(data):
            name: str | None = None
            lines: list[bytes] = []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    lines.append(line[5:].lstrip(b" "))
                elif line.startswith(b"event:"):
                    name = line[6:].strip().decode("utf-8", "replace")
            if lines:
                out.append(SSEEvent(name, b"\n".join(lines)))
        return out

    def _rest(self) -> bytes:
        rest, self._buf = self._buf, b""
        self._cr = False
        return rest + b"\n\n" if rest.strip() else b""

    def flush_payloads(self) -> list[bytes]:
        """Payload of a final event the upstream did not terminate with a blank line."""
        rest = self._rest()
        return self.payloads(rest) if rest else []

    def flush(self) -> list[SSEEvent]:
        rest = self._rest()
        return self.feed(rest) if rest else []
