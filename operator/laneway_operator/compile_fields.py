"""Typed reads of a manifest's fields, and the `CompileError` every failed read raises.

The policy compiler's lowest layer: `compiler.py`, `compile_lanes.py` and `compile_routing.py`
read every field through a `FieldReader`, so each failure names the resource, the dotted field
path and the fix in the same words. `CompileError` is re-exported by `compiler.py`, which is
where the operator (`reconcile.py`), `manifests.py` and the tests import it from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from laneway_operator.durations import parse_duration

GROUP = "routing.laneway.dev"
CR_API_VERSION = f"{GROUP}/v1alpha1"

# Pass as `default` to make a field required (`None` is a real default for optional fields).
REQUIRED = object()

# The `kind` words of `FieldReader.get`, as they read in error messages.
_KINDS: dict[str, tuple[type, ...]] = {
    "an object": (dict,),
    "a list": (list,),
    "a string": (str,),
    "an integer": (int,),
    "a number": (int, float),
    "true or false": (bool,),
}


class CompileError(Exception):
    """A policy or lane that cannot be compiled.

    `resource` is e.g. "RoutingPolicy team-a/support-bot", `field` a dotted path such as
    "spec.routes[1].lanes[0]", `reason` one CamelCase word for status conditions and Events.
    """

    def __init__(self, resource: str, field: str, message: str, reason: str = "InvalidSpec"):
        self.resource = resource
        self.field = field
        self.message = message
        self.reason = reason
        super().__init__(f"{resource}: {field}: {message}")


class FieldReader:
    """Typed reads from one resource; every failure names the resource and the field."""

    def __init__(self, resource: str):
        self.resource = resource

    def fail(self, field: str, message: str, reason: str = "InvalidField") -> NoReturn:
        raise CompileError(self.resource, field, message, reason)

    def check_kind(self, obj: Mapping[str, Any], kind: str) -> None:
        """`kind` must be `kind`; `apiVersion`, when given, must be this CRD group's version."""
        if obj.get("kind") != kind:
            self.fail("kind", f"must be {kind}, got {obj.get('kind')!r}", "WrongKind")
        if obj.get("apiVersion", CR_API_VERSION) != CR_API_VERSION:
            self.fail(
                "apiVersion",
                f"must be {CR_API_VERSION}, got {obj.get('apiVersion')!r}",
                "WrongKind",
            )

    def get(
        self, obj: Mapping[str, Any], key: str, path: str, kind: str, default: Any = REQUIRED
    ) -> Any:
        """`obj[key]` checked against `kind` (a key of `_KINDS`); `default` when absent."""
        field = f"{path}.{key}" if path else key
        value = obj.get(key)
        if value is None:
            if default is REQUIRED:
                self.fail(
                    field, "is required; add it (docs/crds.md lists every field)", "MissingField"
                )
            return default
        # bool is an int in Python; numeric fields must not accept true/false.
        numeric = kind in ("an integer", "a number")
        if (numeric and isinstance(value, bool)) or not isinstance(value, _KINDS[kind]):
            self.fail(field, f"must be {kind}, got {type(value).__name__} {value!r:.40}")
        return value

    def number(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        low: float,
        high: float | None = None,
        default: Any = REQUIRED,
        integer: bool = False,
    ) -> Any:
        """A number (or integer) within [low, high]; floats are normalised for stable bytes."""
        value = self.get(obj, key, path, "an integer" if integer else "a number", default)
        if obj.get(key) is None:
            return value  # the default, used as given
        if value < low or (high is not None and value > high):
            bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            self.fail(f"{path}.{key}", f"must be {bounds}, got {value}")
        return int(value) if integer else float(value)

    def text(self, obj: Mapping[str, Any], key: str, path: str, default: Any = REQUIRED) -> Any:
        """A non-empty string."""
        value = self.get(obj, key, path, "a string", default)
        if value is not None and not value.strip():
            self.fail(f"{path}.{key}", "must not be empty")
        return value

    def choice(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        allowed: tuple[str, ...],
        default: Any = REQUIRED,
    ) -> Any:
        value = self.get(obj, key, path, "a string", default)
        if value not in allowed:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def choices(
        self, obj: Mapping[str, Any], key: str, path: str, allowed: tuple[str, ...], default: Any
    ) -> list[str]:
        """A set of enum strings, returned sorted and without duplicates."""
        values = self.get(obj, key, path, "a list", default)
        for i, value in enumerate(values):
            if value not in allowed:
                self.fail(
                    f"{path}.{key}[{i}]", f"must be one of {', '.join(allowed)}, got {value!r:.60}"
                )
        return sorted(set(values))

    def strings(self, obj: Mapping[str, Any], key: str, path: str, default: Any) -> list[str]:
        values = self.get(obj, key, path, "a list", default)
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                self.fail(f"{path}.{key}[{i}]", "must be a non-empty string")
        return list(values)

    def duration(self, obj: Mapping[str, Any], key: str, path: str, default: str) -> int:
        """Milliseconds of a positive duration string."""
        try:
            ms = parse_duration(self.get(obj, key, path, "a string", default))
        except ValueError as exc:
            self.fail(f"{path}.{key}", str(exc))
        if ms <= 0:
            self.fail(f"{path}.{key}", "must be longer than zero")
        return ms

    def items(self, obj: Mapping[str, Any], key: str, path: str) -> list[tuple[str, dict]]:
        """(path, item) for each object in an optional list."""
        values = self.get(obj, key, path, "a list", [])
        out = []
        for i, item in enumerate(values):
            if not isinstance(item, dict):
                self.fail(f"{path}.{key}[{i}]", f"must be an object, got {type(item).__name__}")
            out.append((f"{path}.{key}[{i}]", item))
        return out
