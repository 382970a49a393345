"""Follow the sidecar's ConfigMap through the Kubernetes API, so new configs land in about a second.

`laneway serve --watch-configmap NS/NAME` (`laneway/cmd_serve.py`) runs `watch_configmap` next to
the file watcher: a mounted ConfigMap file only changes when the kubelet syncs it (a minute or
more), an API watch delivers the change as soon as the operator writes it. Plain aiohttp, no
Kubernetes client library: the sidecar must stay small and must never import the operator.

The loop: list the one ConfigMap (`fieldSelector=metadata.name=NAME`, which a Role restricted to
`resourceNames: [NAME]` allows), apply its `config.json` to the store, then watch from the list's
resourceVersion, applying each change; when the server ends the watch, resume from the last
resourceVersion seen; when it says that version is too old (410), list again. Any failure (API
server down, 401/403 before the operator has bound the pod's ServiceAccount, TLS trouble) is
logged once, and the loop retries with backoff up to 30 s while the sidecar keeps serving the
config it has. The token file is re-read on every connection, as projected tokens rotate.

Its documents are applied as authoritative (`ConfigStore.apply_text(..., authoritative=True)`):
once one has been served, the lagging mounted file can no longer step the sidecar back to an
older version. docs/config-delivery.md describes the whole path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from router_sidecar.reload import ConfigStore

log = logging.getLogger(__name__)

CONFIG_KEY = "config.json"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
WATCH_TIMEOUT_S = 290
MAX_BACKOFF_S = 30.0
FIRST_BACKOFF_S = 0.5


class WatchFailed(Exception):
    """The API server refused or broke the list/watch; the message says what to check."""


class Expired(Exception):
    """The resourceVersion we resume from is gone (410); list again."""


@dataclass(frozen=True)
class ApiEndpoint:
    """Where the API server is and how to authenticate to it."""

    url: str
    token_file: str
    ca_file: str | None

    @classmethod
    def resolve(
        cls, api_url: str | None, token_file: str | None, ca_file: str | None
    ) -> ApiEndpoint:
        """Fill what is not given from the in-cluster environment."""
        if api_url is None:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise WatchFailed("no --kube-api-url and KUBERNETES_SERVICE_HOST is not set")
            host = f"[{host}]" if ":" in host else host
            api_url = f"https://{host}:{port}"
        return cls(
            url=api_url.rstrip("/"),
            token_file=token_file or f"{SA_DIR}/token",
            ca_file=ca_file if ca_file is not None else _existing(f"{SA_DIR}/ca.crt"),
        )

    def token(self) -> str:
        try:
            with open(self.token_file, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise WatchFailed(f"cannot read the token file {self.token_file}: "
                              f"{exc.strerror}") from exc

    def ssl_context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise WatchFailed(f"cannot load the CA file {self.ca_file}: {exc}") from exc


def _existing(path: str) -> str | None:
    return path if os.path.exists(path) else None


async def watch_configmap(
    namespace: str,
    name: str,
    store: ConfigStore,
    *,
    api_url: str | None = None,
    token_file: str | None = None,
    ca_file: str | None = None,
) -> None:
    """Apply every version of ConfigMap NAMESPACE/NAME to `store`; runs until cancelled."""
    try:
        endpoint = ApiEndpoint.resolve(api_url, token_file, ca_file)
    except WatchFailed as exc:
        log.error("Not following ConfigMap %s/%s: %s; serving the config file only",
                  namespace, name, exc)
        return
    await ConfigMapFollower(namespace, name, store, endpoint).run()


class ConfigMapFollower:
    """The list-then-watch loop for one ConfigMap."""

    def __init__(
        self, namespace: str, name: str, store: ConfigStore, endpoint: ApiEndpoint
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.store = store
        self.endpoint = endpoint
        self.where = f"ConfigMap {namespace}/{name}"
        self.collection = (
            f"{endpoint.url}/api/v1/namespaces/{quote(namespace, safe='')}/configmaps"
        )
        self.last_text: str | None = None
        self.failing = False
        self.missing_logged = False

    async def run(self) -> None:
        backoff = FIRST_BACKOFF_S
        version: str | None = None
        while True:
            try:
                async with self._session() as session:
                    if version is None:
                        version = await self._list(session)
                    self._recovered()
                    backoff = FIRST_BACKOFF_S
                    version = await self._watch(session, version)
            except Expired:
                version = None  # too old to resume from: list again, now
            except (WatchFailed, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                version = None
                self._failed(exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(MAX_BACKOFF_S, backoff * 2)

    def _session(self) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {self.endpoint.token()}",
                   "Accept": "application/json"}
        connector = aiohttp.TCPConnector(ssl=self.endpoint.ssl_context())
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=WATCH_TIMEOUT_S + 30)
        # A ConfigMap may hold up to 1 MiB, so watch lines can be long.
        return aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout,
                                     read_bufsize=2**21)

    def _query(self, **extra: str) -> dict[str, str]:
        return {"fieldSelector": f"metadata.name={self.name}", **extra}

    async def _list(self, session: aiohttp.ClientSession) -> str:
        """Apply the ConfigMap as it is now; return the list's resourceVersion."""
        async with session.get(self.collection, params=self._query()) as resp:
            await _check(resp, self.where)
            body = await resp.json()
        items = body.get("items") or []
        if items:
            self._apply(items[0])
        elif not self.missing_logged:
            log.warning("%s does not exist yet; serving the mounted config until it does",
                        self.where)
            self.missing_logged = True
        return str((body.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch(self, session: aiohttp.ClientSession, version: str) -> str:
        """Apply changes until the server ends the watch; return the last resourceVersion."""
        params = self._query(watch="1", resourceVersion=version, allowWatchBookmarks="true",
                             timeoutSeconds=str(WATCH_TIMEOUT_S))
        async with session.get(self.collection, params=params) as resp:
            await _check(resp, self.where)
            async for line in resp.content:
                if line.strip():
                    version = self._event(json.loads(line), version)
        return version

    def _event(self, event: Mapping[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired()
            raise WatchFailed(f"watch error {obj.get('code')}: {obj.get('message')}")
        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind in ("ADDED", "MODIFIED"):
            self._apply(obj)
        elif kind == "DELETED":
            log.warning("%s was deleted; still serving config %s until it is back",
                        self.where, self._serving())
        return version

    def _apply(self, configmap: Mapping[str, Any]) -> None:
        self.missing_logged = False
        text = (configmap.get("data") or {}).get(CONFIG_KEY)
        if text is None:
            log.warning("%s has no %s key; still serving config %s", self.where, CONFIG_KEY,
                        self._serving())
            return
        if text == self.last_text:
            return
        self.last_text = text
        version = (configmap.get("metadata") or {}).get("resourceVersion")
        self.store.apply_text(text, source=f"{self.where} (resourceVersion {version})",
                              authoritative=True)

    def _serving(self) -> str:
        return self.store.current.version if self.store.current is not None else "none"

    def _failed(self, exc: BaseException, backoff: float) -> None:
        message = str(exc) or type(exc).__name__
        if not self.failing:
            log.warning("Cannot follow %s through the API server (%s); still serving config %s, "
                        "retrying with backoff", self.where, message, self._serving())
            self.failing = True
        else:
            log.debug("Still cannot follow %s (%s); next try in %.1fs", self.where, message,
                      backoff)

    def _recovered(self) -> None:
        if self.failing:
            log.info("Following %s through the API server again", self.where)
            self.failing = False


async def _check(resp: aiohttp.ClientResponse, where: str) -> None:
    if resp.status == 200:
        return
    detail = ""
    try:
        detail = (await resp.json()).get("message", "")
    except (aiohttp.ContentTypeError, ValueError):
        detail = ""
    if resp.status in (401, 403):
        raise WatchFailed(
            f"{resp.status} reading {where}: {detail or resp.reason}; the pod's ServiceAccount "
            "needs the Role the operator creates for this policy (laneway-config-<policy>)"
        )
    raise WatchFailed(f"{resp.status} reading {where}: {detail or resp.reason}")
