"""The dashboard's page server and the proxy's optional CORS, over HTTP against a real `aisix`.

/ui files: content types, the strict CSP, nosniff, cache headers and ETag revalidation, no
path escapes, GET/HEAD only, no admin key needed for the files (the API calls need it),
`admin.ui.enabled: false`. CORS: off by default (no headers at all), preflight and exposed
headers for an allowed origin, nothing for another origin, bad origins refused at startup.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path

import yaml
from e2e_helpers import ADMIN_KEY, Gateway, GatewayFactory, Seed, http_request

from fakes.openai_upstream import FakeOpenAIUpstream

ORIGIN = "http://127.0.0.1:3999"


def test_index_and_assets_carry_types_csp_and_cache_headers(gateway: GatewayFactory) -> None:
    gw = gateway()
    redirect = http_request("GET", gw.admin_url + "/ui")
    assert redirect.status == 200  # urllib followed the 308 to /ui/
    index = http_request("GET", gw.admin_url + "/ui/")
    assert index.status == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.headers["x-content-type-options"] == "nosniff"
    assert index.headers["x-frame-options"] == "DENY"
    assert index.headers["cache-control"] == "no-cache"
    csp = index.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert f"connect-src 'self' http://*:{gw.proxy_port} https://*:{gw.proxy_port};" in csp
    assert f'name="aisix-proxy-port" content="{gw.proxy_port}"' in index.text
    # no inline script anywhere: every <script> has a src
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", index.text) == []

    script = http_request("GET", gw.admin_url + "/ui/js/main.js")
    assert script.status == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "no-cache"
    etag = script.headers["etag"]
    again = http_request("GET", gw.admin_url + "/ui/js/main.js", headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b""

    vendor = http_request("GET", gw.admin_url + "/ui/vendor/preact-11.2.0.mjs")
    assert vendor.status == 200
    assert vendor.headers["cache-control"] == "public, max-age=31536000, immutable"
    css = http_request("GET", gw.admin_url + "/ui/vendor/uplot-1.6.32.min.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    head = http_request("HEAD", gw.admin_url + "/ui/css/app.css")
    assert head.status == 200 and head.body == b""


def test_only_files_of_the_dashboard_are_served(gateway: GatewayFactory) -> None:
    gw = gateway()
    for path in (
        "/ui/../admin/v1/models",
        "/ui/%2e%2e/%2e%2e/settings.py",
        "/ui/server.py",
        "/ui/vendor/VENDORED.md",
        "/ui/js/nope.js",
        "/ui/.hidden",
    ):
        response = gw.raw_admin(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert response.status == 404, path
        assert response.json == {"error_msg": "resource not found"}
    post = http_request("POST", gw.admin_url + "/ui/", data=b"{}")
    assert post.status == 405 and post.json == {"error_msg": "method not allowed"}
    # the files need no admin key; the admin API the pages call still does
    assert http_request("GET", gw.admin_url + "/admin/v1/models").status == 401


def test_dashboard_can_be_turned_off(gateway: GatewayFactory) -> None:
    gw = gateway({"admin": {"ui": {"enabled": False}}})
    assert http_request("GET", gw.admin_url + "/ui/").status == 404
    assert gw.admin("GET", "/models").status == 200


def test_proxy_url_setting_narrows_connect_src(gateway: GatewayFactory) -> None:
    gw = gateway({"admin": {"ui": {"proxy_url": "https://llm.example.com"}}})
    index = http_request("GET", gw.admin_url + "/ui/")
    assert "connect-src 'self' https://llm.example.com;" in index.headers["content-security-policy"]
    assert 'name="aisix-proxy-url" content="https://llm.example.com"' in index.text


def test_no_cors_headers_unless_configured(seeded: tuple[Gateway, Seed]) -> None:
    gw, seed = seeded
    chat = {"model": seed.alias, "messages": [{"role": "user", "content": "hi"}]}
    response = gw.proxy(
        "POST", "/v1/chat/completions", chat, api_key=seed.caller_key, headers={"Origin": ORIGIN}
    )
    assert response.status == 200
    assert not [h for h in response.headers if h.startswith("access-control-")]
    preflight = gw.proxy(
        "OPTIONS",
        "/v1/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_for_an_allowed_origin(
    gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway({"proxy": {"cors": {"allow_origins": [ORIGIN], "max_age_secs": 120}}})
    seed = gw.seed(fake_openai.url)
    preflight = gw.proxy(
        "OPTIONS",
        "/v1/chat/completions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert preflight.headers["access-control-allow-methods"] == "GET, POST"
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert preflight.headers["access-control-max-age"] == "120"
    assert "access-control-allow-credentials" not in preflight.headers
    assert fake_openai.requests == []  # answered by the gateway, nothing went upstream

    chat = {"model": seed.alias, "messages": [{"role": "user", "content": "hi"}]}
    ok = gw.proxy(
        "POST", "/v1/chat/completions", chat, api_key=seed.caller_key, headers={"Origin": ORIGIN}
    )
    assert ok.status == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "x-aisix-served-by" in ok.headers["access-control-expose-headers"]
    assert ok.headers["vary"] == "origin"
    refused = gw.proxy("POST", "/v1/chat/completions", chat, headers={"Origin": ORIGIN})
    assert refused.status == 401  # CORS grants no access by itself
    assert refused.headers["access-control-allow-origin"] == ORIGIN

    other = gw.proxy(
        "POST",
        "/v1/chat/completions",
        chat,
        api_key=seed.caller_key,
        headers={"Origin": "http://evil.example"},
    )
    assert other.status == 200
    assert "access-control-allow-origin" not in other.headers
    other_preflight = gw.proxy(
        "OPTIONS",
        "/v1/chat/completions",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other_preflight.headers
    assert other_preflight.status == 405


def test_bad_cors_origin_is_a_config_error(tmp_path: Path, port_factory: Callable[[], int]) -> None:
    config = {
        "proxy": {"addr": f"127.0.0.1:{port_factory()}", "cors": {"allow_origins": ["evil/*"]}},
        "admin": {"addr": f"127.0.0.1:{port_factory()}", "admin_keys": [ADMIN_KEY]},
        "data_dir": str(tmp_path / "data"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "aisix", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result  # config errors exit 2 (decisions.md §8)
    assert "proxy.cors.allow_origins" in result.stderr + result.stdout


def test_package_data_ships_every_dashboard_file() -> None:
    """pyproject's package-data globs (one level each, as setuptools reads them) cover every
    file of the dashboard, so a wheel install serves the same pages as this checkout."""
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))
    patterns = [p.split("/") for p in config["tool"]["setuptools"]["package-data"]["aisix"]]
    package = root / "src" / "aisix"
    files = [
        p.relative_to(package).parts
        for p in (package / "admin" / "ui" / "static").rglob("*")
        if p.is_file()
    ]
    assert len(files) > 20
    missing = [
        "/".join(parts)
        for parts in files
        if not any(
            len(pat) == len(parts)
            and all(fnmatchcase(a, b) for a, b in zip(parts, pat, strict=True))
            for pat in patterns
        )
    ]
    assert missing == []
