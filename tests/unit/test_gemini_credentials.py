"""The gemini and vertex secret parsers (contract §5.1): accepted shapes, and errors that
name the field without ever containing the secret."""

from __future__ import annotations

import json

import pytest

from aisix.credentials import gemini, vertex

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEv-secret-material\n-----END PRIVATE KEY-----\n"
ACCOUNT = {
    "type": "service_account",
    "client_email": "sa@p.iam.gserviceaccount.com",
    "private_key": PEM,
    "token_uri": "https://oauth2.googleapis.com/token",
}


def test_gemini_key() -> None:
    assert gemini.parse("  AIzaSy-secret  ").api_key == "AIzaSy-secret"
    assert "AIzaSy" not in repr(gemini.parse("AIzaSy-secret"))


@pytest.mark.parametrize("secret", ["", "   ", "AIza secret with spaces", "AIza\nsecret"])
def test_gemini_bad_keys(secret: str) -> None:
    with pytest.raises(ValueError) as caught:
        gemini.parse(secret)
    assert "secret" in str(caught.value)
    if secret.strip():
        assert "AIza" not in str(caught.value)


def test_vertex_service_account_as_object_or_string() -> None:
    for account in (ACCOUNT, json.dumps(ACCOUNT)):
        secret = json.dumps(
            {
                "project": "my-proj",
                "region": "europe-west4",
                "service_account_json": account,
                "token_url": "http://127.0.0.1:9/token",
            }
        )
        cred = vertex.parse(secret)
        assert (cred.project, cred.region, cred.kind) == (
            "my-proj",
            "europe-west4",
            "service_account",
        )
        assert cred.service_account is not None and cred.service_account["private_key"] == PEM
        assert cred.token_url == "http://127.0.0.1:9/token"
        assert "PRIVATE" not in repr(cred)


def test_vertex_access_token_and_adc() -> None:
    cred = vertex.parse('{"project": "p1", "region": "us-central1", "access_token": "ya29.tok"}')
    assert cred.kind == "access_token" and cred.access_token == "ya29.tok"
    assert "ya29" not in repr(cred)
    adc = vertex.parse('{"project": "p1", "region": "global"}')
    assert adc.kind == "adc" and adc.access_token is None and adc.service_account is None


@pytest.mark.parametrize(
    ("secret", "names"),
    [
        ("not json ya29.tok", "not valid JSON"),
        ('["ya29.tok"]', "JSON object"),
        (
            '{"project": "p", "region": "r", "access_token": "ya29.tok", "extra": 1}',
            "an unknown vertex field",
        ),
        ('{"region": "us-central1", "access_token": "ya29.tok"}', "'project'"),
        ('{"project": "p", "access_token": "ya29.tok"}', "'region'"),
        ('{"project": "P/../x", "region": "us-central1", "access_token": "ya29.tok"}', "project"),
        ('{"project": "p", "region": "us central", "access_token": "ya29.tok"}', "region"),
        ('{"project": "p", "region": "r", "access_token": "ya29 tok"}', "access_token"),
        (
            '{"project": "p", "region": "r", "access_token": "ya29.tok", '
            '"service_account_json": {}}',
            "either",
        ),
        ('{"project": "p", "region": "r", "service_account_json": "{bad ya29.tok"}', "JSON"),
        ('{"project": "p", "region": "r", "service_account_json": {"type": "user"}}', "type"),
        (
            '{"project": "p", "region": "r", "service_account_json": '
            '{"client_email": "a@b", "private_key": "ya29.tok"}}',
            "PEM",
        ),
        ('{"project": "p", "region": "r", "token_url": "ftp://ya29.tok"}', "token_url"),
    ],
)
def test_vertex_errors_name_the_field_not_the_secret(secret: str, names: str) -> None:
    with pytest.raises(ValueError) as caught:
        vertex.parse(secret)
    message = str(caught.value)
    assert names in message
    assert "ya29" not in message and "tok" not in message.replace("token", "")
