"""Build a value that satisfies a simple JSON Schema, for simulated JSON answers and tool calls.

`answers.compose_answer` calls `example_for` with a `response_format` schema or a tool's
parameter schema. It covers what providers' structured-output modes accept: objects, arrays,
scalars, `enum`, `const`, `anyOf` / `oneOf` / `allOf`, nullable type lists and local `$ref`s.
Every listed property is filled, so both `required` and strict schemas are met. Schemas come
from clients, so anything malformed yields some value rather than an exception.
"""

from __future__ import annotations

import math
from typing import Any

# Deep or self-referencing schemas stop here with null rather than recursing forever.
_MAX_DEPTH = 12
# Arrays get at most this many items, whatever `minItems` asks for.
_MAX_ITEMS = 16


def example_for(schema: Any, text: str) -> Any:
    """A value valid against `schema`; strings are filled with `text`."""
    return _fill(schema, text, root=schema, depth=0)


def _fill(schema: Any, text: str, root: Any, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return _fill(_resolve(schema["$ref"], root), text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if _non_empty_list(schema.get("enum")):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if _non_empty_list(schema.get(key)):
            return _fill(schema[key][0], text, root, depth + 1)
    if _non_empty_list(schema.get("allOf")):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = (
                _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            )
            merged.update(part if isinstance(part, dict) else {})
        return _fill(merged, text, root, depth + 1)
    return _fill_type(schema, _type_of(schema), text, root, depth)


def _fill_type(schema: dict[str, Any], kind: str, text: str, root: Any, depth: int) -> Any:
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {str(name): _fill(sub, text, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        if _number(schema.get("maxItems"), 1) < 1:
            return []
        count = int(min(_MAX_ITEMS, max(1, _number(schema.get("minItems"), 1))))
        return [_fill(schema.get("items", {}), text, root, depth + 1) for _ in range(count)]
    if kind == "string":
        return _string(schema, text)
    if kind == "integer":
        return int(_number(schema.get("minimum"), 0))
    if kind == "number":
        return _number(schema.get("minimum"), 0)
    if kind == "boolean":
        return True
    return None


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        # A nullable type list: use the first real type.
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return str(kind)


def _string(schema: dict[str, Any], text: str) -> str:
    longest = int(max(0, min(_number(schema.get("maxLength"), len(text)), len(text))))
    value = text[:longest]
    # Bounded both ways: str.ljust takes no width beyond a C ssize_t, negative or not.
    shortest = int(max(0, min(_number(schema.get("minLength"), 0), 10_000)))
    return value.ljust(shortest, ".")


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return value


def _non_empty_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0


def _resolve(ref: Any, root: Any) -> Any:
    # Only local references (#/$defs/x, #/definitions/x) appear in provider requests.
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node
