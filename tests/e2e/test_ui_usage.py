"""The dashboard's usage charts, top lists and audit log in a real browser (issue 13 items 1, 3, 4).

These pages read `GET /admin/v1/usage/timeseries`, `/usage/top`, `/usage?group_by=provider_key`
and `/audit`, which the pgaudit13 branch adds: on a gateway without them the pages show a
"not available" state and these tests fail by design until that branch is merged.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from e2e_helpers import ADMIN_KEY, PROVIDER_SECRET, Gateway, Seed, wait_for

from fakes.browser import Browser
from fakes.openai_upstream import FakeOpenAIUpstream, Reply


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser.start(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


def traffic(gw: Gateway, seed: Seed, fake: FakeOpenAIUpstream) -> dict[str, Any]:
    """Two good calls and one refused upstream; returns the key's usage once all three show."""
    gw.admin(
        "PUT",
        f"/models/{seed.model_id}",
        {
            "display_name": seed.alias,
            "provider": "openai",
            "model_name": seed.upstream_model,
            "provider_key_id": seed.provider_key_id,
            "pricing": {"input_per_million": 2.5, "output_per_million": 10},
        },
    )
    wait_for(lambda: gw.admin("GET", f"/models/{seed.model_id}").json["revision"] == 2)
    key = gw.admin("GET", f"/apikeys/{seed.api_key_id}").json["value"]
    key["budget"] = {"limit_usd": 0.05, "period": "month"}
    assert gw.admin("PUT", f"/apikeys/{seed.api_key_id}", key).status == 200
    client = gw.openai_client(api_key=seed.caller_key)
    for text in ("one", "two"):
        client.chat.completions.create(
            model=seed.alias, messages=[{"role": "user", "content": text}]
        )
    fake.script(Reply.error(400, "bad request upstream", err_type="invalid_request_error"))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=seed.alias, messages=[{"role": "user", "content": "x"}]
        )
    return wait_for(
        lambda: (
            (u := gw.admin("GET", f"/apikeys/{seed.api_key_id}/usage").json)["requests"] == 3 and u
        ),
        message="three requests in the key's usage",
    )


def test_overview_charts_and_top_lists(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream, browser: Browser
) -> None:
    gw, seed = seeded
    traffic(gw, seed, fake_openai)
    b = browser
    b.login(gw.admin_url, ADMIN_KEY)
    for name in ("requests", "latency", "tokens", "spend"):
        b.find(f'[data-testid="chart-{name}"] canvas')
    since = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    series = wait_for(
        lambda: (
            (s := gw.admin("GET", f"/usage/timeseries?bucket=hour&from={since}").json)
            and sum(p["requests"] for p in s["points"]) == 3
            and s
        ),
        message="three requests in the time series",
    )
    errors = sum(p["errors"] for p in series["points"])
    assert errors >= 1
    b.nav("keys")
    b.nav("overview")
    b.wait_text('[data-testid="total-requests"]', "3")
    assert b.text('[data-testid="total-errors"]') == str(errors)
    b.wait_text('[data-testid="top-keys"]', seed.api_key_id)
    b.wait_text('[data-testid="top-models"]', seed.alias)
    assert not b.all('[data-testid="unavailable"]')
    b.click('[data-range="hour"]')
    b.find('[data-testid="chart-requests"] canvas')
    b.wait_text('[data-testid="total-requests"]', "3")
    b.capture("overview")

    b.nav("usage")
    b.select('#usage-form [name="group_by"]', "provider_key")
    b.click("#usage-form button[type=submit]")
    row = b.wait_text('[data-testid="usage-table"] tbody tr', "openai-test")
    assert row.split()[1] == "3"

    b.nav("keys")
    b.click(f'[data-key-link="{seed.api_key_id}"]')
    b.wait_text('[data-testid="key-requests"]', "3")
    b.find('[data-testid="chart-key-spend"] canvas')
    b.wait_text('[data-testid="budget-burn"]', "of $0.050000")
    b.capture("key-detail")


def test_audit_log_lists_admin_writes(seeded: tuple[Gateway, Seed], browser: Browser) -> None:
    gw, seed = seeded
    b = browser
    b.login(gw.admin_url, ADMIN_KEY)
    b.nav("keys")
    b.click(f'[data-key-link="{seed.api_key_id}"]')
    b.fill("#grace", "60")
    b.click('[data-testid="rotate"]')
    b.wait_text('[data-testid="revision"]', "2")

    b.nav("audit")
    table = b.wait_text('[data-testid="audit-table"]', seed.api_key_id)
    assert seed.provider_key_id in table and seed.model_id in table
    actions = {a.text for a in b.all('[data-testid="audit-table"] [data-action]')}
    assert {"create", "rotate"} <= actions
    assert PROVIDER_SECRET not in b.driver.page_source  # secrets are masked in the diffs
    assert "ADMIN_KEY" not in b.driver.page_source and ADMIN_KEY not in b.driver.page_source
    b.capture("audit")

    b.select('#audit-form [name="action"]', "rotate")
    b.click("#audit-form button[type=submit]")
    b.until(
        lambda: {a.text for a in b.all('[data-testid="audit-table"] [data-action]')} == {"rotate"},
        "only rotate entries",
    )
    rows = b.all('[data-testid="audit-table"] tbody tr')
    assert len(rows) == 1 and seed.api_key_id in rows[0].text
    assert "key_hash" in rows[0].text  # the diff names the changed field
