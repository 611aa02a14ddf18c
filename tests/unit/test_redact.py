"""Secret redaction (issue 12 item 6): Redactor, the upstream error path, log records."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from aisix import redact
from aisix.errors import UpstreamClientError, upstream_status_error
from aisix.redact import RedactingFilter, Redactor

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def restore_current() -> Iterator[None]:
    before = redact.current()
    yield
    redact.install(before)


def test_every_occurrence_is_masked_and_short_secrets_are_ignored() -> None:
    r = Redactor([SECRET, "x", "other-secret-value"])
    text = f"Bearer {SECRET} bad; again {SECRET}; other-secret-value; x marks"
    assert r.redact(text) == "Bearer *** bad; again ***; ***; x marks"
    assert Redactor().redact(text) == text


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    r = Redactor(["abcdef", "abcdefghij"])
    assert r.redact("key abcdefghij") == "key ***"


def test_json_secrets_mask_each_credential_inside() -> None:
    pem = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
    )
    secrets = [
        orjson.dumps({"tenant_id": "t", "client_id": "c", "client_secret": "entra-secret-1"}),
        orjson.dumps({"project": "p", "region": "r", "service_account_json": {"private_key": pem}}),
        orjson.dumps({"access_key_id": "AKIAEXAMPLE1", "secret_access_key": "aws-secret-2"}),
    ]
    r = Redactor.from_provider_secrets(s.decode() for s in secrets)
    echoed = "got entra-secret-1 and AKIAEXAMPLE1/aws-secret-2 and MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
    assert r.redact(echoed) == "got *** and ***/*** and ***"
    assert r.redact("region r, project p") == "region r, project p"


def test_upstream_4xx_message_code_and_param_are_redacted() -> None:
    body = orjson.dumps(
        {"error": {"message": f"Incorrect API key: {SECRET}", "code": SECRET, "param": SECRET}}
    )
    err = upstream_status_error(400, body, None, redactor=Redactor([SECRET]))
    assert isinstance(err, UpstreamClientError)
    assert SECRET not in err.openai_body().decode()
    assert err.message == "Incorrect API key: ***"
    # without an explicit redactor the installed (current snapshot's) one applies
    redact.install(Redactor([SECRET]))
    assert SECRET not in upstream_status_error(422, body, None).message


def test_redacted_value_walks_json() -> None:
    r = Redactor([SECRET])
    value = [{"last_error": {"message": f"echo {SECRET}", "status": 400}}, "x"]
    assert r.redact_value(value) == [{"last_error": {"message": "echo ***", "status": 400}}, "x"]


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    redact.install(Redactor([SECRET]))
    logger = logging.getLogger("aisix.test.redact")
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, "aisix.test.redact"):
        logger.info("upstream said %s", f"bad key {SECRET}")
        try:
            raise ValueError(SECRET)
        except ValueError:
            logger.exception("failed")
    assert SECRET not in caplog.text
    assert "bad key ***" in caplog.text
