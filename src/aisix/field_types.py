"""The field types of the resource models: bounded numbers, printable names, and the JSON
Schema statements of rules the validators enforce.

Bounds sit far above any real use and low enough that every derived number (nano-USD,
milliseconds, Redis integers) stays exact and finite (issue 12 item 1). Integer fields are
strict (no strings, no booleans) but take integral JSON numbers (`30000.0`), as JSON Schema
does. The `pattern`, `format` and `if`/`then` extras document for clients and schemathesis
what `aisix.field_rules` checks; the validators give the error messages.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from aisix.field_rules import no_control_chars

MAX_COUNT = 10**12  # requests or tokens per window
MAX_CONCURRENCY = 1_000_000
MAX_USD = 1e9  # a budget: 1e18 nano-USD, inside a signed 64-bit integer
MAX_PRICE_PER_MILLION = 1e6
MAX_TIMEOUT_MS = 86_400_000  # one day
MAX_RETRIES = 100
MAX_BACKOFF_MS = 600_000
MAX_WEIGHT = 1_000_000
MAX_COOLDOWN_SECONDS = 30 * 86_400
MAX_TEXT = 256

NO_CONTROL = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


def integral(value: Any) -> Any:
    """JSON has one number type: `30000.0` is the integer 30000 (as in JSON Schema); a
    fractional number or a string stays an error of the strict int check."""
    if type(value) is float and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


#: on an integer field (after its Field constraints, so the JSON Schema keeps them):
#: strict (no strings, no booleans), integral floats accepted
INTEGRAL = BeforeValidator(integral)
PositiveInt = Annotated[int, Field(gt=0), INTEGRAL]
NonNegInt = Annotated[int, Field(ge=0), INTEGRAL]
NonNegNumber = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(gt=0, le=MAX_COUNT), INTEGRAL]
Price = Annotated[float, Field(ge=0, le=MAX_PRICE_PER_MILLION)]
Usd = Annotated[float, Field(gt=0, le=MAX_USD)]
TimeoutMs = Annotated[int, Field(ge=0, le=MAX_TIMEOUT_MS), INTEGRAL]
Retries = Annotated[int, Field(ge=0, le=MAX_RETRIES), INTEGRAL]
CooldownSeconds = Annotated[int, Field(ge=0, le=MAX_COOLDOWN_SECONDS), INTEGRAL]
PRINTABLE = Field(json_schema_extra={"pattern": NO_CONTROL})
Name = Annotated[
    str, Field(min_length=1, max_length=128), PRINTABLE, AfterValidator(no_control_chars)
]
#: a free identifier (team_id, user_id, scope_ref, model_name): bounded, printable
Ident = Annotated[
    str, Field(min_length=1, max_length=MAX_TEXT), PRINTABLE, AfterValidator(no_control_chars)
]
HeaderName = Annotated[str, Field(json_schema_extra={"pattern": HEADER_NAME})]
#: an RFC 3339 timestamp with a zone
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


def string_implies(present: str, required: str) -> dict[str, Any]:
    """JSON Schema: when `present` is a string, `required` must be one too."""
    return {
        "if": {"properties": {present: {"type": "string"}}, "required": [present]},
        "then": {"properties": {required: {"type": "string"}}, "required": [required]},
    }


#: ProviderKey rules across fields (azure only with azure-openai, which needs api_base)
PROVIDER_KEY_RULES: dict[str, Any] = {
    "allOf": [
        {
            "if": {"properties": {"azure": {"type": "object"}}, "required": ["azure"]},
            "then": {"properties": {"adapter": {"const": "azure-openai"}}},
        },
        {
            "if": {"properties": {"adapter": {"const": "azure-openai"}}},
            "then": {
                "properties": {"api_base": {"type": "string"}},
                "required": ["api_base"],
            },
        },
    ]
}
