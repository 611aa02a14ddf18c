"""`aisix export`: the current resources as a resources.yaml that `resources_file` mode loads.

`export_document(records)` turns stored records into the file format of `aisix.store.file`:
references become names (`provider_key: <display_name>`, policy `scope_ref` by name), every
string is `$`-escaped (the file interpolates `${VAR}`), and each provider secret becomes a
`${VAR}` placeholder whose variable name is returned with the secret, so the caller decides
whether to print an env file. API keys without a `display_name` get their id as one (the file
format requires a name). Loading the document back yields the same values under file ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aisix.resources import KINDS
from aisix.snapshot import Record
from aisix.store.file import FORMAT_VERSION

_NOT_VAR_CHAR = re.compile(r"[^A-Z0-9_]+")
_SCOPE_KIND = {"api_key": "api_keys", "model": "models", "provider_key": "provider_keys"}


@dataclass(slots=True)
class Export:
    document: dict[str, Any]
    #: placeholder variable → the secret it stands for (never printed unless asked)
    secrets: dict[str, str] = field(default_factory=dict)
    #: one line per liberty taken (e.g. a name given to an unnamed API key)
    notes: list[str] = field(default_factory=list)


def _escape(node: Any) -> Any:
    if isinstance(node, str):
        return node.replace("$", "$$")
    if isinstance(node, dict):
        return {key: _escape(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_escape(value) for value in node]
    return node


def secret_variable(display_name: str, taken: set[str]) -> str:
    base = "PROVIDER_SECRET_" + (_NOT_VAR_CHAR.sub("_", display_name.upper()).strip("_") or "KEY")
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def export_document(records: list[Record]) -> Export:
    by_kind: dict[str, list[Record]] = {kind: [] for kind in KINDS}
    for record in records:
        if record.kind in by_kind:
            by_kind[record.kind].append(record)
    names = {
        kind: {r.id: str(r.value.get("name") or r.value.get("display_name") or r.id) for r in rs}
        for kind, rs in by_kind.items()
    }
    out = Export({"_format_version": FORMAT_VERSION})
    taken: set[str] = set()
    for kind in KINDS:
        entries: list[dict[str, Any]] = []
        for record in by_kind[kind]:
            value = _escape(dict(record.value))
            if kind == "provider_keys" and "secret" in record.value:
                variable = secret_variable(names[kind][record.id], taken)
                out.secrets[variable] = str(record.value["secret"])
                value["secret"] = "${" + variable + "}"
            elif kind == "models" and "provider_key_id" in value:
                pk_id = record.value["provider_key_id"]
                if pk_id in names["provider_keys"]:
                    del value["provider_key_id"]
                    value["provider_key"] = _escape(names["provider_keys"][pk_id])
            elif kind == "api_keys" and not value.get("display_name"):
                value["display_name"] = _escape(record.id)
                out.notes.append(f'api_keys "{record.id}": exported with display_name = its id')
            elif kind.endswith("policies"):
                section = _SCOPE_KIND.get(str(record.value.get("scope")))
                ref = record.value.get("scope_ref")
                if section is not None and ref in names[section]:
                    value["scope_ref"] = _escape(names[section][ref])
            entries.append(value)
        if entries:
            out.document[kind] = entries
    return out
