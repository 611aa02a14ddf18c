"""The dashboard at /ui in a real browser (issue 13 item 4): Debian's headless Chromium driven
by Selenium against a real `aisix` process and the fake OpenAI upstream.

Covers what works on every gateway: login (and a refused key), creating a provider key, a
model and a caller key through the forms, the key's plaintext (copied, hashed like `shasum`),
calls with the openai SDK showing up in the overview, usage explorer (CSV) and key pages,
rotation with grace, disable, health, the Playground (streamed, cross-origin), the admin API's
validation errors next to their fields, 401 handling and logout. The usage time-series, top-N
and audit pages are exercised by test_ui_usage.py.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from e2e_helpers import ADMIN_KEY, Gateway, GatewayFactory, sha256_hex, wait_for

from fakes.browser import Browser
from fakes.openai_upstream import FakeOpenAIUpstream, Reply

PROVIDER_SECRET = "sk-upstream-secret-from-the-browser"
ALIAS = "ui-gpt"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser.start(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def dash_gateway(gateway: GatewayFactory, port_factory: Callable[[], int]) -> Gateway:
    """A gateway whose proxy allows the dashboard's origin (for the Playground)."""
    admin_port = port_factory()
    origin = f"http://127.0.0.1:{admin_port}"
    return gateway(
        {
            "admin": {"addr": f"127.0.0.1:{admin_port}"},
            "proxy": {"cors": {"allow_origins": [origin]}},
        }
    )


def submit(b: Browser, form: str) -> None:
    b.click(f"{form} button[type=submit]")


def field(form: str, path: str) -> str:
    return f'{form} [name="{path}"]'


def create_provider_key(b: Browser, gw: Gateway, upstream: FakeOpenAIUpstream) -> str:
    b.nav("provider-keys")
    b.click('[data-testid="new-create"]')
    form = "#provider_keys-form"
    b.fill(field(form, "display_name"), "fake-openai")
    b.fill(field(form, "provider"), "openai")
    b.fill(field(form, "api_base"), upstream.url + "/v1")
    b.fill(field(form, "secret"), PROVIDER_SECRET)
    b.capture("provider-keys-form")
    submit(b, form)
    b.wait_text('[data-testid="flash"]', "Created provider key fake-openai")
    b.wait_text('[data-testid="provider_keys-table"]', "fake-openai")
    assert PROVIDER_SECRET not in b.driver.page_source  # write-only: never shown back
    assert "(write-only)" in b.text('[data-testid="provider_keys-table"]')
    listed = gw.admin("GET", "/provider_keys").json["list"]
    (entry,) = [e for e in listed if e["value"]["display_name"] == "fake-openai"]
    return str(entry["id"])


def create_model(b: Browser, gw: Gateway) -> str:
    b.nav("models")
    b.click('[data-testid="new-single"]')
    form = "#models-form"
    b.fill(field(form, "display_name"), ALIAS)
    b.fill(field(form, "model_name"), "gpt-4o")
    b.select_text(field(form, "provider_key_id"), "fake-openai")
    b.fill(field(form, "pricing.input_per_million"), "2.5")
    b.fill(field(form, "pricing.output_per_million"), "10")
    submit(b, form)
    b.wait_text('[data-testid="flash"]', f"Created model {ALIAS}")
    b.wait_text('[data-testid="models-table"]', "openai/gpt-4o")
    b.capture("models")
    listed = gw.admin("GET", "/models").json["list"]
    (entry,) = [e for e in listed if e["value"]["display_name"] == ALIAS]
    assert entry["value"]["pricing"] == {"input_per_million": 2.5, "output_per_million": 10}
    return str(entry["id"])


def create_caller_key(b: Browser, gw: Gateway) -> tuple[str, str]:
    """Create `ui-app` with a $5 monthly budget; return (id, plaintext as copied)."""
    b.nav("keys")
    b.click('[data-testid="new-key-button"]')
    form = "#key-form"
    b.fill(field(form, "display_name"), "ui-app")
    b.fill(field(form, "allowed_models"), ALIAS)
    b.fill(field(form, "team_id"), "team-ui")
    b.fill(field(form, "budget.limit_usd"), "5")
    b.select(field(form, "budget.period"), "month")
    b.fill(field(form, "rate_limit.rpm"), "600")
    submit(b, form)
    plaintext = b.value('[data-testid="new-key"] [data-testid="plaintext"]')
    key_id = b.text('[data-testid="new-key-id"]')
    b.capture("keys-created")
    b.click('[data-testid="new-key"] [data-testid="copy"]')
    b.wait_text('[data-testid="copy-status"]', "Copied")
    copied = b.js_async("navigator.clipboard.readText().then(arguments[0])")
    assert copied == plaintext
    stored = gw.admin("GET", f"/apikeys/{key_id}").json["value"]
    # the same hash as the seed guide's `printf '%s' KEY | shasum -a 256`
    assert stored["key_hash"] == sha256_hex(plaintext)
    assert stored["allowed_models"] == [ALIAS]
    assert stored["budget"] == {"limit_usd": 5, "period": "month"}
    assert stored["rate_limit"] == {"rpm": 600}
    assert stored["team_id"] == "team-ui"
    return key_id, plaintext


def usage_of(gw: Gateway, key_id: str) -> dict[str, Any]:
    response = gw.admin("GET", f"/apikeys/{key_id}/usage")
    assert response.status == 200, response.text
    return dict(response.json)


def calls_work(gw: Gateway, plaintext: str) -> bool:
    try:
        gw.openai_client(api_key=plaintext).models.list()
    except openai.AuthenticationError:
        return False
    return True


def test_operator_journey(
    dash_gateway: Gateway, browser: Browser, fake_openai: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    gw, b = dash_gateway, browser
    downloads = tmp_path / "downloads"
    b.open(gw.admin_url + "/ui/")
    b.capture("login")
    b.fill("#admin-key", "not-the-admin-key")
    b.click("#login-form button[type=submit]")
    assert "refused" in b.text('[data-testid="login-error"]')
    b.login(gw.admin_url, ADMIN_KEY)
    b.grant_clipboard(gw.admin_url)

    pk_id = create_provider_key(b, gw, fake_openai)
    model_id = create_model(b, gw)
    key_id, plaintext = create_caller_key(b, gw)
    assert gw.admin("GET", f"/models/{model_id}").json["value"]["provider_key_id"] == pk_id

    # calls with the official SDK, one plain and one streamed
    gw.wait_for_key(plaintext, ALIAS)
    client = gw.openai_client(api_key=plaintext)
    reply = client.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "first call"}]
    )
    assert reply.choices[0].message.content == "echo: first call"
    stream = client.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "second call"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "echo: second call"
    )
    usage = wait_for(
        lambda: (u := usage_of(gw, key_id))["requests"] == 2 and u,
        message="two requests in the key's usage",
    )
    assert usage["cost_usd"] > 0

    # overview: totals and the top lists
    b.nav("keys")
    b.nav("overview")
    b.wait_text('[data-testid="total-requests"]', "2")
    assert b.text('[data-testid="total-tokens"]') == f"{usage['total_tokens']:,}"
    b.wait_text('[data-testid="top-keys"]', "ui-app")
    b.wait_text('[data-testid="top-models"]', ALIAS)
    b.capture("overview")

    # usage explorer: the key's row and its CSV export
    b.nav("usage")
    row = b.wait_text('[data-testid="usage-table"] tbody tr', "ui-app")
    assert row.split()[1] == "2"
    b.allow_downloads(downloads)
    b.click('[data-testid="export-csv"]')
    link = b.text('[data-testid="csv-link"]')
    exported_file = b.downloaded(downloads, ".csv")
    assert exported_file.name == link
    rows = list(csv.DictReader(io.StringIO(exported_file.read_text("utf-8"))))
    (exported,) = [r for r in rows if r["key"] == key_id]
    assert exported["display_name"] == "ui-app"
    assert int(exported["requests"]) == 2
    assert int(exported["total_tokens"]) == usage["total_tokens"]
    assert float(exported["cost_usd"]) == pytest.approx(usage["cost_usd"])
    b.select('#usage-form [name="group_by"]', "team")
    b.click("#usage-form button[type=submit]")
    b.wait_text('[data-testid="usage-table"]', "team-ui")
    b.capture("usage")

    # the key's page: usage and budget burn-down
    b.nav("keys")
    b.fill('[data-testid="key-search"]', "team-ui")
    b.click("form.search button[type=submit]")
    b.wait_text('[data-testid="pager-status"]', "1–1 of 1")
    b.capture("keys")
    b.click(f'[data-key-link="{key_id}"]')
    b.wait_text('[data-testid="key-requests"]', "2")
    spent = usage["budget"]["spent_usd"]
    b.wait_text('[data-testid="budget-spent"]', f"${spent:.6f}")
    bar = b.find('[data-testid="budget-bar"]')
    assert float(bar.get_attribute("max") or 0) == 5
    assert float(bar.get_attribute("value") or 0) == pytest.approx(spent)
    b.capture("key-detail")

    # rotate with a grace period: old and new plaintexts both work
    b.fill("#grace", "120")
    b.click('[data-testid="rotate"]')
    rotated = b.value('[data-testid="rotated-key"] [data-testid="plaintext"]')
    assert rotated.startswith("sk-") and rotated != plaintext
    b.wait_text('[data-testid="revision"]', "2")
    assert gw.admin("GET", f"/apikeys/{key_id}").json["value"]["key_hash"] == sha256_hex(rotated)
    wait_for(lambda: calls_work(gw, rotated), message="the rotated key to work")
    assert calls_work(gw, plaintext)  # within the grace period

    # health: the model is healthy, then cools down after upstream 503s
    b.nav("health")
    b.wait_text('[data-testid="health-table"]', ALIAS)
    assert b.find('[data-testid="health-table"] [data-status="healthy"]').text == "healthy"
    fake_openai.script(*[Reply.error(503, "upstream down")] * 4)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "x"}])
    fake_openai.reset()
    b.click_text("main.page button", "Refresh")
    cooling = b.wait_text('[data-testid="health-table"] tbody tr', "cooldown")
    assert "upstream_server_error" in cooling and "503" in cooling
    assert "1 cooling down" in b.text('[data-testid="health-summary"]')
    b.capture("health")

    # edit: disable the key; both plaintexts stop working
    b.nav("keys")
    b.click(f'[data-key-link="{key_id}"]')
    b.click('#key-edit-form [name="disabled"]')
    submit(b, "#key-edit-form")
    b.wait_text('[data-testid="saved"]', "revision 3")
    value = gw.admin("GET", f"/apikeys/{key_id}").json["value"]
    assert value["disabled"] is True
    assert value["budget"]["limit_usd"] == 5  # fields the form does not change are kept
    assert value["previous_key_hash"] == sha256_hex(plaintext)
    wait_for(lambda: not calls_work(gw, rotated), message="the disabled key to be refused")
    assert not calls_work(gw, plaintext)

    # logout clears the stored key and returns to the login form
    b.click('[data-testid="logout"]')
    assert b.text('[data-testid="login-message"]') == "Signed out."
    assert b.js("return sessionStorage.getItem('aisix.adminKey')") is None
    b.open(gw.admin_url + "/ui/#/keys")
    b.find("#admin-key")
    assert not [line for line in b.console() if "Content Security Policy" in line]


def test_admin_api_errors_shown_next_to_the_field(
    seeded: tuple[Gateway, Any], browser: Browser
) -> None:
    gw, seed = seeded
    b = browser
    b.login(gw.admin_url, ADMIN_KEY)

    b.nav("policies")
    b.click('[data-testid="new-rate"]')
    form = "#rate_limit_policies-form"
    b.fill(field(form, "name"), "too-small")
    b.select(field(form, "scope"), "team")
    b.fill(field(form, "scope_ref"), "team-a")
    b.select(field(form, "window"), "minute")
    b.fill(field(form, "max_requests"), "0")
    submit(b, form)
    error = b.text(f'{form} [data-error-for="max_requests"]')
    assert error.startswith("max_requests:")
    assert "max_requests" in b.find(f"{form} .field.invalid").text
    b.capture("policies-error")
    b.fill(field(form, "max_requests"), "30")
    submit(b, form)
    b.wait_text('[data-testid="flash"]', "Created rate-limit policy too-small")
    b.wait_text('[data-testid="rate_limit_policies-table"]', "30 requests per minute")
    b.click('[data-kind="rate_limit_policies"] [data-testid="edit"]')
    b.fill(field(form, "max_requests"), "45")
    b.fill(field(form, "max_tokens"), "-5")
    submit(b, form)
    assert b.text(f'{form} [data-error-for="max_tokens"]').startswith("max_tokens:")
    b.fill(field(form, "max_tokens"), "")
    submit(b, form)
    b.wait_text('[data-testid="rate_limit_policies-table"]', "45 requests per minute")
    (policy,) = gw.admin("GET", "/rate_limit_policies").json["list"]
    assert policy["revision"] == 2 and "max_tokens" not in policy["value"]

    b.click('[data-testid="new-budget"]')
    form = "#budget_policies-form"
    b.fill(field(form, "name"), "pk-cap")
    b.select(field(form, "scope"), "provider_key")
    b.fill(field(form, "scope_ref"), "no-such-provider-key")
    b.fill(field(form, "limit_usd"), "10")
    b.select(field(form, "period"), "day")
    submit(b, form)
    assert "does not exist" in b.text(f'{form} [data-error-for="scope_ref"]')
    b.fill(field(form, "scope_ref"), seed.provider_key_id)
    submit(b, form)
    b.wait_text('[data-testid="budget_policies-table"]', "per day (block)")
    b.capture("policies")

    b.nav("models")
    b.click('[data-testid="new-single"]')
    form = "#models-form"
    b.fill(field(form, "display_name"), "Bad Provider Model")
    b.fill(field(form, "provider"), "Not Lowercase")
    b.fill(field(form, "model_name"), "gpt-4o")
    b.select_text(field(form, "provider_key_id"), "openai-test")
    submit(b, form)
    assert b.text(f'{form} [data-error-for="provider"]').startswith("provider:")
    b.click_text(f"{form} button", "Cancel")

    b.click('[data-testid="new-routing"]')
    form = "#models-form"
    b.fill(field(form, "display_name"), "chat-ui")
    b.fill(field(form, "routing.targets"), "no-such-alias")
    submit(b, form)
    assert "routing.targets" in b.text(f'{form} [data-error-for="routing.targets"]')
    b.fill(field(form, "routing.targets"), seed.alias)
    submit(b, form)
    b.wait_text('[data-testid="models-table"]', "routing · failover")

    b.click_text('[data-testid="models-table"] tr[data-row] button', "Delete")
    b.click_text('[data-testid="models-table"] tr[data-row] button', "Confirm delete")
    # the single-target alias is a routing target and a budget scope: 409, shown in the row
    b.wait_text('[data-testid="models-table"] [role="alert"]', "referenced by")

    key = gw.admin("GET", f"/apikeys/{seed.api_key_id}").json["value"]
    key["expires_at"] = "2031-05-06T07:08:09Z"
    assert gw.admin("PUT", f"/apikeys/{seed.api_key_id}", key).status == 200
    b.nav("keys")
    b.click(f'[data-key-link="{seed.api_key_id}"]')
    assert b.value('#key-edit-form [name="expires_at"]') == "2031-05-06T07:08:09"
    b.fill("#grace", "90000")
    b.click('[data-testid="rotate"]')
    assert "grace_seconds" in b.text('[data-error-for="grace_seconds"]')
    form = "#key-edit-form"
    b.fill(field(form, "budget.limit_usd"), "-1")
    b.select(field(form, "budget.period"), "day")
    submit(b, form)
    assert b.text(f'{form} [data-error-for="budget.limit_usd"]').startswith("budget.limit_usd:")
    b.fill(field(form, "budget.limit_usd"), "2")
    submit(b, form)
    b.wait_text('[data-testid="saved"]', "revision 3")
    value = gw.admin("GET", f"/apikeys/{seed.api_key_id}").json["value"]
    assert value["budget"] == {"limit_usd": 2, "period": "day"}
    assert value["expires_at"] == "2031-05-06T07:08:09Z"  # kept to the second


def test_playground_streams_through_the_proxy(
    dash_gateway: Gateway, browser: Browser, fake_openai: FakeOpenAIUpstream
) -> None:
    gw, b = dash_gateway, browser
    seed = gw.seed(fake_openai.url)
    b.login(gw.admin_url, ADMIN_KEY)
    b.nav("playground")
    assert b.value("#pg-proxy") == gw.proxy_url
    b.fill("#pg-key", seed.caller_key)
    b.fill("#pg-model", seed.alias)
    b.fill("#pg-message", "hello through the browser")
    b.click("#playground-form button[type=submit]")
    b.wait_text('[data-testid="answer"]', "echo: hello through the browser")
    b.wait_text('[data-testid="usage"]', "tokens")
    assert b.text('[data-testid="served-by"]') == seed.alias
    assert b.text('[data-testid="cost"]') == "$0 (no pricing)"
    b.capture("playground")
    sent = fake_openai.requests[-1]
    assert sent.json["stream"] is True
    assert sent.json["messages"] == [{"role": "user", "content": "hello through the browser"}]
    # the pasted key is kept nowhere but the page's memory
    stored = b.js("return JSON.stringify([sessionStorage, localStorage])")
    assert seed.caller_key not in stored

    b.fill("#pg-key", "sk-wrong")
    b.click("#playground-form button[type=submit]")
    assert b.wait_text('[data-testid="playground-error"]', "401").startswith("401")

    # a routing alias, priced: served-by comes from the exposed header, the cost matches the
    # gateway's own accounting for the request
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
    routing = {"targets": [{"model": seed.alias}]}
    gw.create("models", {"display_name": "chat-ui", "routing": routing})
    key_id = gw.create_api_key("sk-playground-caller", ["chat-ui", seed.alias])
    gw.wait_for_key("sk-playground-caller", seed.alias)  # /v1/models lists single targets only
    b.nav("models")
    b.nav("playground")
    b.fill("#pg-key", "sk-playground-caller")
    b.fill("#pg-model", "chat-ui")
    b.click("#playground-form button[type=submit]")
    b.wait_text('[data-testid="usage"]', "tokens")
    assert b.text('[data-testid="served-by"]') == seed.alias
    cost = wait_for(
        lambda: (
            (u := gw.admin("GET", f"/apikeys/{key_id}/usage").json)["requests"] == 1
            and u["cost_usd"]
        ),
        message="the playground request in the key's usage",
    )
    assert b.text('[data-testid="cost"]') == f"${cost:.6f}"


def test_a_refused_admin_key_returns_to_login(
    seeded: tuple[Gateway, Any], browser: Browser
) -> None:
    gw, _ = seeded
    b = browser
    b.login(gw.admin_url, ADMIN_KEY)
    b.js("sessionStorage.setItem('aisix.adminKey', 'revoked-admin-key')")
    b.click('nav a[data-nav="models"]')
    message = b.text('[data-testid="login-message"]')
    assert "401" in message and "log in again" in message
    assert b.js("return sessionStorage.getItem('aisix.adminKey')") is None


def test_sha256_in_the_browser_matches_shasum(
    seeded: tuple[Gateway, Any], browser: Browser
) -> None:
    """crypto.subtle and the plain-JS fallback (for non-secure origins) agree with hashlib."""
    gw, _ = seeded
    b = browser
    b.open(gw.admin_url + "/ui/")
    b.find("#admin-key")
    samples = ["", "sk-app-caller", "é ü 鍵 🔑", "a" * 55, "b" * 56, "c" * 64, "d" * 200]
    got = b.js_async(
        """const [samples, done] = arguments;
        import('/ui/js/keygen.js').then(async (m) => {
          const hex = (a) => Array.from(a, (x) => x.toString(16).padStart(2, '0')).join('');
          const out = [];
          for (const s of samples) {
            out.push([await m.sha256Hex(s), hex(m.sha256Fallback(new TextEncoder().encode(s)))]);
          }
          const key = m.newPlaintext();
          done({out, key});
        });""",
        samples,
    )
    for sample, (subtle, fallback) in zip(samples, got["out"], strict=True):
        assert subtle == sha256_hex(sample), sample
        assert fallback == sha256_hex(sample), sample
    assert len(got["key"]) == 35 and got["key"].startswith("sk-")
    int(got["key"][3:], 16)
