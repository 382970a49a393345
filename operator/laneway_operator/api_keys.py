"""Provider API keys for the health probes, read from the Secrets that lanes reference.

Called by the probe loops (`handlers_lanes.py`). Keys are cached for a short time so that
hundreds of lanes probing every few seconds do not each read their Secret every time. A key is
only ever put into a probe request header; it is never logged, stored in status or exported.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from typing import Any

from laneway_operator.kube import ApiException, Kube, core_path, describe_error

CACHE_TTL_S = 30.0


class KeyUnavailable(Exception):
    """The lane references a key that cannot be read; the message says which and why."""


class ApiKeys:
    """Reads `apiKeySecretRef` keys with a short cache per Secret."""

    def __init__(self, kube: Kube, *, ttl_s: float = CACHE_TTL_S) -> None:
        self._kube = kube
        self._ttl_s = ttl_s
        self._cache: dict[tuple[str, str], tuple[float, Mapping[str, Any] | None]] = {}

    async def key_for(self, namespace: str, ref: Mapping[str, Any] | None) -> str | None:
        """The key a lane references, None when it references none; KeyUnavailable otherwise."""
        if not ref or not ref.get("name") or not ref.get("key"):
            return None
        name, key = str(ref["name"]), str(ref["key"])
        data = await self._secret_data(namespace, name)
        if data is None:
            raise KeyUnavailable(f"Secret {namespace}/{name} does not exist; create it")
        if key not in data:
            raise KeyUnavailable(f"Secret {namespace}/{name} has no key {key!r}")
        try:
            return base64.b64decode(data[key], validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise KeyUnavailable(f"Secret {namespace}/{name} key {key!r} is not text") from exc

    async def _secret_data(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        cached = self._cache.get((namespace, name))
        if cached is not None and time.monotonic() - cached[0] < self._ttl_s:
            return cached[1]
        try:
            secret = await self._kube.get(core_path("secrets", namespace, name))
        except ApiException as exc:
            raise KeyUnavailable(
                f"cannot read Secret {namespace}/{name}: {describe_error(exc)}"
            ) from exc
        data = None if secret is None else (secret.get("data") or {})
        self._cache[(namespace, name)] = (time.monotonic(), data)
        return data
