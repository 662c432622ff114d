"""The JSON Schema of the sweep file and its reference page, both generated from the models."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from ._models import Choice, FloatRange, IntRange, PerRank, SweepFile

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_REGENERATE = "python -m lorasweep.search.sweepfile"


def json_schema() -> dict[str, Any]:
    """The sweep file's JSON Schema (descriptions, enums, defaults), for editors and `lorasweep schema`."""
    return {"$schema": SCHEMA_DIALECT, **SweepFile.model_json_schema()}


def reference_markdown() -> str:
    """The sweep-file reference page: one section per sweep-file section, a table of its keys."""
    out = [
        f"<!-- Generated from search/sweepfile/_models.py by `{_REGENERATE}`: do not edit. -->",
        "",
        "# The sweep file",
        "",
        "Every section is optional: a section left out takes the defaults below. Editors that run the "
        "YAML language server complete and check a file that starts with "
        "`# yaml-language-server: $schema=./sweep-file.schema.json` (every file in spaces/ does); "
        "`lorasweep schema` prints the schema.",
    ]
    for section, field in SweepFile.model_fields.items():
        out += ["", f"## {section}", "", " ".join((field.description or "").split())]
        model = next((a for a in getattr(field.annotation, "__args__", ()) if _is_model(a)), None)
        if model is not None:
            out += ["", *_table(model)]
        elif section == "search_space":
            for entry in (FloatRange, IntRange, Choice, PerRank):
                out += ["", f"### {entry.__name__}", "", *_table(entry)]
    return "\n".join(out) + "\n"


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _table(model: type[BaseModel]) -> list[str]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    required = set(schema.get("required", []))
    for key, prop in schema["properties"].items():
        default = "(required)" if key in required else f"`{json.dumps(prop.get('default'))}`"
        description = " ".join((prop.get("description") or "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {_type(prop, defs)} | {default} | {description} |")
    return rows


_PLAIN = {"string", "integer", "number", "true/false", "null"}


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    """A property's type as a reader writes it: `one of a, b`, `integer (>= 1)`, `list of string`."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name, {})
        if "properties" in target:
            return f"mapping ({', '.join(f'`{k}`' for k in target['properties'])})"
        return _type(target, defs)
    for union in ("anyOf", "oneOf"):
        if union in prop:
            parts = list(dict.fromkeys(_type(p, defs) for p in prop[union]))
            if _PLAIN <= set(parts):  # a value YAML writes plainly: said once, not as its five types
                parts = ["plain value", *(p for p in parts if p not in _PLAIN)]
            return " or ".join(parts)
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = {
        "string": "string",
        "integer": "integer",
        "number": "number",
        "boolean": "true/false",
        "null": "null",
        "array": "list",
        "object": "mapping",
    }.get(prop.get("type", ""), "any")
    if kind == "list" and "items" in prop:
        kind = f"list of {_type(prop['items'], defs)}".replace("list of plain value", "list of plain values")
    if kind == "mapping" and isinstance(prop.get("additionalProperties"), dict):
        keys, values = prop.get("propertyNames"), prop["additionalProperties"]
        kind = f"mapping of {_type(keys, defs) if keys else 'string'} to {_type(values, defs)}"
    bounds = [
        f"{op} {prop[k]}"
        for k, op in (
            ("exclusiveMinimum", ">"),
            ("minimum", ">="),
            ("exclusiveMaximum", "<"),
            ("maximum", "<="),
            ("minItems", "items >="),
        )
        if k in prop
    ]
    return f"{kind} ({', '.join(bounds)})" if bounds else kind
