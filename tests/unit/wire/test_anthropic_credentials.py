"""The anthropic secret parser: the API key, trimmed; unusable values refused without echo."""

from __future__ import annotations

import pytest

from aisix.credentials.anthropic import AnthropicCredential, parse


def test_key_is_trimmed_and_hidden_from_repr() -> None:
    credential = parse("  sk-ant-api03-secretvalue \n")
    assert credential == AnthropicCredential(api_key="sk-ant-api03-secretvalue")
    assert "secretvalue" not in repr(credential)


@pytest.mark.parametrize(
    "secret", ["", "   ", "sk-ant secret", "sk-ant-\r\nx-evil: 1", "sk-ant-\x00zz", "sk\x7fant"]
)
def test_unusable_secrets_are_refused_without_echo(secret: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse(secret)
    message = str(refused.value)
    assert "anthropic secret" in message
    for piece in ("secret" + "x", "evil", "zz", "sk-ant"):
        assert piece not in message


def test_a_placeholder_is_accepted() -> None:
    assert parse("none").api_key == "none"
