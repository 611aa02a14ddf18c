"""JSON Schemas of the resource kinds and the admin API's OpenAPI 3.1 document.

Both are generated from the pydantic models in `aisix.resources`, so they cannot drift from
the validation the admin API, the stores and `aisix validate` apply. `resource_schemas()`
backs `aisix schema` (draft 2020-12, one self-contained schema per kind);
`openapi_document(routes)` describes every route the admin listener serves once (path
aliases such as `/admin/v1/api_keys` are served but not listed), the routes other modules
contribute through `extra_routes` included, with the constraints validation enforces.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from aisix.admin.crud import KIND_PATHS, MAX_LIST_OFFSET, MAX_SEARCH_LENGTH, RotateRequest
from aisix.resources import (
    ID_PATTERN,
    ApiKey,
    BudgetPolicy,
    DirectModel,
    ProviderKey,
    RateLimitPolicy,
    RoutingModel,
)

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_KIND_MODELS: dict[str, type[BaseModel] | Any] = {
    "provider_keys": ProviderKey,
    "models": DirectModel | RoutingModel,
    "api_keys": ApiKey,
    "rate_limit_policies": RateLimitPolicy,
    "budget_policies": BudgetPolicy,
}
_SCHEMA_NAMES = {
    "provider_keys": "ProviderKey",
    "models": "Model",
    "api_keys": "ApiKey",
    "rate_limit_policies": "RateLimitPolicy",
    "budget_policies": "BudgetPolicy",
}
#: URL segments served but left out of the document: aliases of a documented segment
_ALIAS_SEGMENTS = frozenset({"api_keys"})
#: a chosen id (contract §3.1): the pattern, and never `status`
_ID_SCHEMA = {"type": "string", "pattern": "^(?!status$)" + ID_PATTERN.pattern.removeprefix("^")}
#: statuses the routes other modules serve can answer besides 200 and 401
_EXTRA_ERRORS = {
    ("GET", "/admin/v1/apikeys/{id}/usage"): (400, 404, 503),
    ("GET", "/admin/v1/usage"): (400, 503),
}
#: summaries of the routes other modules serve through `extra_routes`
_EXTRA_SUMMARIES = {
    ("GET", "/admin/v1/models/status"): "Per-model runtime state (cooldown, latency, in flight)",
    ("GET", "/admin/v1/health"): "Gateway health: model cooldowns and snapshot age",
    ("GET", "/admin/v1/apikeys/{id}/usage"): "One API key's usage and budget (?from=&to=)",
    ("GET", "/admin/v1/usage"): (
        "Aggregated usage (?group_by=api_key|model|team|provider_key&from=&to=)"
    ),
    ("GET", "/admin/v1/usage/timeseries"): "Usage over time, every bucket present",
    ("GET", "/admin/v1/usage/top"): "Top keys, models, teams or provider keys",
    ("GET", "/admin/v1/audit"): "Audit log of admin writes, newest first",
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


_TIME = {"type": "string", "format": "date-time"}
_RANGE = [
    _query("from", _TIME, "RFC 3339; rounded down to the bucket"),
    _query("to", _TIME, "RFC 3339; rounded up to the next bucket boundary"),
]
_GROUPS = ["api_key", "model", "team", "provider_key"]
#: query parameters and 200 schema of the extra routes that have them
_EXTRA_DETAILS: dict[tuple[str, str], tuple[list[dict[str, Any]], str]] = {
    ("GET", "/admin/v1/usage"): (
        [_query("group_by", {"enum": _GROUPS, "default": "api_key"}, "grouping"), *_RANGE],
        "UsageReport",
    ),
    ("GET", "/admin/v1/usage/timeseries"): (
        [
            _query("bucket", {"enum": ["minute", "hour", "day"], "default": "hour"}, "step"),
            *_RANGE,
            *(
                _query(name, {"type": "string"}, "only this one")
                for name in ("api_key_id", "model_id", "team_id", "provider_key_id")
            ),
        ],
        "UsageTimeseries",
    ),
    ("GET", "/admin/v1/usage/top"): (
        [
            _query("by", {"enum": _GROUPS, "default": "api_key"}, "what to rank"),
            _query(
                "metric",
                {"enum": ["cost_usd", "requests", "total_tokens"], "default": "cost_usd"},
                "ranked by",
            ),
            *_RANGE,
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}, ""),
        ],
        "UsageTop",
    ),
    ("GET", "/admin/v1/audit"): (
        [
            _query("kind", {"type": "string"}, "resource kind, e.g. api_keys"),
            _query("resource_id", {"type": "string"}, ""),
            _query("action", {"enum": ["create", "update", "delete", "rotate"]}, ""),
            _query("actor", {"type": "string"}, "admin key fingerprint"),
            *_RANGE,
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}, ""),
            _query("offset", {"type": "integer", "minimum": 0, "default": 0}, ""),
        ],
        "AuditPage",
    ),
}


def resource_schemas() -> dict[str, dict[str, Any]]:
    """Draft 2020-12 JSON Schema of every resource kind's `value`, keyed by kind."""
    out: dict[str, dict[str, Any]] = {}
    for kind, model in _KIND_MODELS.items():
        schema = TypeAdapter(model).json_schema(mode="validation")
        out[kind] = {"$schema": DRAFT_2020_12, "title": _SCHEMA_NAMES[kind], **schema}
    return out


def _components() -> dict[str, Any]:
    classes: tuple[type[BaseModel], ...] = (
        ProviderKey,
        DirectModel,
        RoutingModel,
        ApiKey,
        RateLimitPolicy,
        BudgetPolicy,
        RotateRequest,
    )
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in classes]
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    # PUT may omit the write-only secret (or send "***"): the stored one is kept (§5.1)
    update = dict(schemas["ProviderKey"])
    update["required"] = [name for name in update.get("required", []) if name != "secret"]
    update["title"] = "ProviderKeyUpdate"
    schemas["ProviderKeyUpdate"] = update
    schemas["Model"] = {
        "oneOf": [
            {"$ref": "#/components/schemas/DirectModel"},
            {"$ref": "#/components/schemas/RoutingModel"},
        ]
    }
    schemas["Error"] = {
        "type": "object",
        "properties": {"error_msg": {"type": "string"}},
        "required": ["error_msg"],
    }
    schemas["Deleted"] = {
        "type": "object",
        "properties": {"deleted": {"const": True}, "id": {"type": "string"}},
        "required": ["deleted", "id"],
    }
    for name in _SCHEMA_NAMES.values():
        schemas[f"{name}Envelope"] = {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "value": _ref(name),
                "revision": {"type": "integer", "minimum": 1},
            },
            "required": ["id", "value", "revision"],
        }
        schemas[f"{name}List"] = {
            "type": "object",
            "properties": {
                "list": {"type": "array", "items": _ref(f"{name}Envelope")},
                "total": {"type": "integer", "minimum": 0},
            },
            "required": ["list", "total"],
        }
    schemas.update(_usage_schemas())
    schemas["RotateResult"] = {
        "type": "object",
        "properties": {"entry": _ref("ApiKeyEnvelope"), "plaintext": {"type": "string"}},
        "required": ["entry", "plaintext"],
    }
    return schemas


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


def _usage_schemas() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    number = {"type": "number"}
    nullable_ms = {"type": ["number", "null"]}
    nullable_text = {"type": ["string", "null"]}
    totals = {
        "requests": count,
        "prompt_tokens": count,
        "completion_tokens": count,
        "total_tokens": count,
        "cost_usd": number,
    }
    row = _object({"key": nullable_text, "display_name": nullable_text, **totals})
    point = _object(
        {
            "ts": _TIME,
            "requests": count,
            "errors": count,
            **{k: v for k, v in totals.items() if k != "requests"},
            "latency_p50_ms": nullable_ms,
            "latency_p95_ms": nullable_ms,
        }
    )
    top_row = _object({**row["properties"], "errors": count})
    entry = _object(
        {
            "id": {"type": "string"},
            "at": _TIME,
            "actor": {"type": "string", "description": "first 16 hex of SHA-256(admin key)"},
            "action": {"enum": ["create", "update", "delete", "rotate"]},
            "kind": {"type": "string"},
            "resource_id": {"type": "string"},
            "diff": {
                "type": "object",
                "description": "field path -> {before, after}; secrets shown as ***",
                "additionalProperties": _object({"before": {}, "after": {}}),
            },
        }
    )
    return {
        "UsageReport": _object(
            {
                "group_by": {"enum": _GROUPS},
                "from": _TIME,
                "to": _TIME,
                "rows": {"type": "array", "items": row},
            }
        ),
        "UsageTimeseries": _object(
            {
                "bucket": {"enum": ["minute", "hour", "day"]},
                "from": _TIME,
                "to": _TIME,
                "points": {"type": "array", "items": point, "maxItems": 2000},
            }
        ),
        "UsageTop": _object(
            {
                "by": {"enum": _GROUPS},
                "metric": {"enum": ["cost_usd", "requests", "total_tokens"]},
                "from": _TIME,
                "to": _TIME,
                "rows": {"type": "array", "items": top_row},
            }
        ),
        "AuditPage": _object(
            {
                "total": count,
                "limit": count,
                "offset": count,
                "entries": {"type": "array", "items": entry},
            }
        ),
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"application/json": {"schema": schema or {}}}
    return {"description": description, "content": body}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Invalid JSON, field, reference or query",
        401: "Missing or wrong admin key",
        404: "Resource not found",
        405: "Method not allowed, or the resources are file-managed",
        409: "Identity clash, or the resource is referenced",
        413: "Request body too large",
        503: "Store unavailable",
    }
    return {str(s): _json(texts[s], _ref("Error")) for s in (401, *statuses)}


def _id_param() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": dict(_ID_SCHEMA)}


def _body(schema_name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _kind_paths(segment: str, kind: str) -> dict[str, Any]:
    name = _SCHEMA_NAMES[kind]
    tag = [kind]
    body = _body(name)
    put_body = _body("ProviderKeyUpdate") if kind == "provider_keys" else body
    page = [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
        {
            "name": "offset",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LIST_OFFSET},
        },
        {
            "name": "search",
            "in": "query",
            "description": "words that must all appear (case-insensitive) in the id or a "
            "field of the value (names, team, user, models, metadata; never a secret); "
            "total counts the matches",
            "schema": {"type": "string", "maxLength": MAX_SEARCH_LENGTH},
        },
    ]
    envelope = _ref(f"{name}Envelope")
    collection = {
        "get": {
            "operationId": f"list_{kind}",
            "tags": tag,
            "summary": f"List {kind}",
            "parameters": page,
            "responses": {
                "200": _json("Entries in creation order", _ref(f"{name}List")),
                **_errors(400, 503),
            },
        },
        "post": {
            "operationId": f"create_{kind}",
            "tags": tag,
            "summary": f"Create one of {kind}",
            "requestBody": body,
            "responses": {"201": _json("Created", envelope), **_errors(400, 405, 409, 413, 503)},
        },
    }
    item = {
        "parameters": [_id_param()],
        "get": {
            "operationId": f"read_{kind}",
            "tags": tag,
            "summary": "Read one",
            "responses": {"200": _json("The entry", envelope), **_errors(404, 503)},
        },
        "put": {
            "operationId": f"replace_{kind}",
            "tags": tag,
            "summary": "Replace (or create under this id)",
            "requestBody": put_body,
            "responses": {
                "200": _json("Updated", envelope),
                "201": _json("Created", envelope),
                **_errors(400, 405, 409, 413, 503),
            },
        },
        "delete": {
            "operationId": f"delete_{kind}",
            "tags": tag,
            "summary": "Delete",
            "responses": {"200": _json("Deleted", _ref("Deleted")), **_errors(404, 405, 409, 503)},
        },
    }
    paths = {f"/admin/v1/{segment}": collection, f"/admin/v1/{segment}/{{id}}": item}
    if kind == "api_keys":
        rotate_body = {
            "required": False,
            "content": {"application/json": {"schema": _ref("RotateRequest")}},
        }
        paths[f"/admin/v1/{segment}/{{id}}/rotate"] = {
            "parameters": [_id_param()],
            "post": {
                "operationId": "rotate_api_key",
                "tags": tag,
                "summary": "Rotate the key; the only response with a plaintext",
                "requestBody": rotate_body,
                "responses": {
                    "200": _json("Rotated", _ref("RotateResult")),
                    **_errors(400, 404, 405, 503),
                },
            },
        }
    return paths


def openapi_document(extra_routes: list[tuple[str, str]], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the admin listener: each route once (aliases such as
    `/admin/v1/api_keys` are served but not listed)."""
    paths: dict[str, Any] = {}
    for segment, kind in KIND_PATHS.items():
        if segment not in _ALIAS_SEGMENTS:
            paths.update(_kind_paths(segment, kind))
    for method, pattern in extra_routes:
        if pattern.split("/")[3:4] and pattern.split("/")[3] in _ALIAS_SEGMENTS:
            continue
        operation: dict[str, Any] = {
            "operationId": _operation_id(method, pattern),
            "summary": _EXTRA_SUMMARIES.get((method, pattern), pattern),
            "responses": {
                "200": _json("OK"),
                **_errors(*_EXTRA_ERRORS.get((method, pattern), ())),
            },
        }
        details = _EXTRA_DETAILS.get((method, pattern))
        if details is not None:
            operation["parameters"], schema = details
            operation["responses"] = {"200": _json("OK", _ref(schema)), **_errors(400, 503)}
        if "{id}" in pattern:
            operation["parameters"] = [_id_param()]
        paths.setdefault(pattern, {})[method.lower()] = operation
    plain = {
        "description": "`ok`, or `draining` with 503",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    paths["/livez"] = {
        "get": {
            "operationId": "livez",
            "summary": "Liveness",
            "security": [],
            "responses": {"200": plain, "503": plain},
        }
    }
    paths["/admin/openapi.json"] = {
        "get": {
            "operationId": "openapi_document",
            "summary": "This document",
            "security": [],
            "responses": {"200": _json("OpenAPI 3.1")},
        }
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": DRAFT_2020_12,
        "info": {"title": "aisix admin API", "version": version},
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"apiKeyHeader": []}],
    }


def _operation_id(method: str, pattern: str) -> str:
    words = [p.strip("{}") for p in pattern.removeprefix("/admin/v1/").split("/")]
    return "_".join([method.lower(), *words]).replace(".", "_")
