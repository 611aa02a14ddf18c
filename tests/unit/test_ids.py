"""Request ids are RFC 4122 version-4 UUID strings and do not repeat."""

import uuid

from aisix.ids import uuid4_str


def test_uuid4_str_is_a_version_4_rfc4122_uuid() -> None:
    seen = set()
    for _ in range(2000):
        text = uuid4_str()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 2000
