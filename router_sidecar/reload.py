"""The sidecar's current config, and how a new one replaces it without disturbing traffic.

`ConfigStore.apply_text` validates a whole document with `config.load_config_text`; only a valid
document replaces `current`. A broken one leaves the last good config serving, logs one WARNING
line, and marks the store stale until a good document arrives (listeners turn that into the
`laneway_config_reload_failures_total` and `laneway_config_stale` metrics).

Each request reads `store.current` once and keeps that object for its whole life, so a reload
never changes the rules under an in-flight request and nothing is dropped.

Sources: `watch_file` polls a file (mtime, inode, size) every half second, which catches edits,
atomic renames and the symlink swap Kubernetes does when a mounted ConfigMap changes;
`router_sidecar.kube_source.watch_configmap` (in a pod) calls `apply_text` with what the API server
sends. `cmd_serve.py` wires both; `server.py` subscribes its metrics.

The API watch is authoritative: it passes `authoritative=True`, and once one of its documents
has been applied, documents from other sources (the file) are ignored for the life of the
process. The kubelet refreshes a mounted ConfigMap up to a minute after the API watch delivered
the same change, so after two quick changes the file shows the older one: applying it would
step the sidecar back. Until the API source has delivered a valid config (not yet connected,
403 before the operator bound the pod's ServiceAccount, ConfigMap not created yet), the file
keeps its say. docs/config-delivery.md explains the choice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from router_sidecar.config import ConfigError, RouterConfig, load_config_text
from router_sidecar.secrets import SecretStore

log = logging.getLogger(__name__)

Applied = Callable[[RouterConfig], None]
Rejected = Callable[[str, str], None]


class ConfigStore:
    """Holds the config being served; see the module docstring."""

    def __init__(self, secrets: SecretStore | None = None) -> None:
        self.current: RouterConfig | None = None
        self.stale = False
        self.last_error: str | None = None
        self.last_text: str | None = None  # the newest document seen, good or bad
        # The source of the last authoritative document applied; None until there is one.
        self.authority: str | None = None
        self.secrets = secrets
        self._on_applied: list[Applied] = []
        self._on_rejected: list[Rejected] = []

    def subscribe(self, applied: Applied | None = None, rejected: Rejected | None = None) -> None:
        """Call `applied(config)` on every new config (now, if one is loaded) and
        `rejected(source, error)` on every refused document."""
        if applied is not None:
            self._on_applied.append(applied)
            if self.current is not None:
                applied(self.current)
        if rejected is not None:
            self._on_rejected.append(rejected)

    def apply_text(self, text: str, source: str, *, authoritative: bool = False) -> bool:
        """Validate and apply a config document; True if it is what the store now serves.

        False, and the old config kept, if it is bad or if it is not `authoritative` while an
        authoritative source has already delivered (see the module docstring).
        """
        if text == self.last_text and self.current is not None and not self.stale:
            # Exactly what is served already (both sources carry the same ConfigMap).
            if authoritative:
                self.authority = source
            return True
        if not authoritative and self.authority is not None:
            self._ignore(source)
            return False
        self.last_text = text
        try:
            config = load_config_text(text, source=source)
        except ConfigError as exc:
            self.reject(source, str(exc))
            return False
        self.apply(config, source, text=text)
        if authoritative:
            self.authority = source
        return True

    def apply(self, config: RouterConfig, source: str, text: str | None = None) -> None:
        """Serve an already-validated config from now on (`text`: the document it came from)."""
        self.last_text = text
        previous = self.current
        if self.secrets is not None:
            self.secrets.refresh(config)
        self.current = config
        self.stale = False
        self.last_error = None
        if previous is None or previous.version != config.version:
            log.info(
                "Serving config %s of policy %s/%s from %s (mode %s)",
                config.version,
                config.policy_namespace,
                config.policy_name,
                source,
                config.mode,
            )
        for listener in self._on_applied:
            listener(config)

    def reject(self, source: str, error: str) -> None:
        """Record a config document that could not be used."""
        self.stale = self.current is not None
        self.last_error = error
        kept = self.current.version if self.current else "none"
        log.warning("Rejected config from %s, still serving %s: %s", source, kept, error)
        for listener in self._on_rejected:
            listener(source, error)

    def _ignore(self, source: str) -> None:
        # One line per change of the other source: the kubelet changes the file once per
        # ConfigMap change, so this is never more frequent than the "Serving config" lines.
        kept = self.current.version if self.current else "none"
        log.info("Ignoring the new config from %s: following %s, which is authoritative; "
                 "still serving %s", source, self.authority, kept)

    def refresh_secrets(self) -> None:
        if self.secrets is not None and self.current is not None:
            self.secrets.refresh(self.current)


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks, so a ConfigMap's ..data swap changes the inode
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_dev, st.st_size


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


async def watch_file(
    store: ConfigStore,
    path: str,
    *,
    interval_s: float = 0.5,
    secrets_every_s: float = 5.0,
) -> None:
    """Reload `path` into `store` whenever it changes, until cancelled; also re-reads Secrets.

    The first check runs at once, so a change made before the watcher started is not missed.
    """
    seen: tuple[int, int, int, int] | None = (-1, -1, -1, -1)  # matches no file, nor a missing one
    missing_logged = False
    since_secrets = 0.0
    while True:
        signature = _signature(path)
        if signature != seen:
            seen = signature
            text = _read(path)
            if text is None and not missing_logged:
                log.warning("Config file %s is gone; still serving the last good config", path)
            missing_logged = text is None
            if text is not None and text != store.last_text:
                store.apply_text(text, source=path)
        await asyncio.sleep(interval_s)
        since_secrets += interval_s
        if since_secrets >= secrets_every_s:
            since_secrets = 0.0
            store.refresh_secrets()
