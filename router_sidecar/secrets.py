"""Provider API keys, read from mounted Secret files: `DIR/<secret name>/<key>`.

This is how the operator's webhook mounts Secrets into the pod and how `laneway serve
--secrets-dir` finds them outside a cluster. `reload.ConfigStore` calls `refresh(config)` when a
config is applied and again on its polling loop, so rotated Secrets are picked up without a
restart; the request path only does a dictionary lookup (`key_for`). A missing file means the lane
calls its provider without a key, and a WARNING names the file once (never the value).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from router_sidecar.config import RouterConfig, SecretRef

log = logging.getLogger(__name__)


class SecretStore:
    """API keys by lane name, read from files under one directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._keys: Mapping[str, str] = {}
        self._warned: set[tuple[str, str]] = set()

    def key_for(self, lane: str) -> str | None:
        return self._keys.get(lane)

    def refresh(self, config: RouterConfig) -> None:
        """Re-read every lane's key file; cheap enough to call every few seconds."""
        keys: dict[str, str] = {}
        for name, lane in config.lanes.items():
            ref = lane.provider.api_key
            if ref is None:
                continue
            value = self._read(ref)
            if value:
                keys[name] = value
        self._keys = keys

    def _read(self, ref: SecretRef) -> str | None:
        path = os.path.join(self.directory, ref.name, ref.key)
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read().rstrip("\r\n")
        except OSError as exc:
            if (ref.name, ref.key) not in self._warned:
                self._warned.add((ref.name, ref.key))
                log.warning(
                    "Secret %s/%s: cannot read %s (%s); lanes using it call their provider "
                    "without an API key until the file appears",
                    ref.name,
                    ref.key,
                    path,
                    exc.strerror or type(exc).__name__,
                )
            return None
        self._warned.discard((ref.name, ref.key))
        return value
