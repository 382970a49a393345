"""What the operator's handlers share while it runs: clients, metrics, settings, triggers.

`main.py` builds one `Runtime` and hands it to kopf as the operator memo (`memo.runtime`), so
every handler module reaches the same API client, probe session and metrics without globals.
`Triggers` is how a change to one object (a lane, a pod) wakes the reconcile loop of another (the
policies that use it).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from laneway_operator.api_keys import ApiKeys
from laneway_operator.injection import DEFAULT_IMAGE, SidecarOptions
from laneway_operator.kube import Kube
from laneway_operator.metrics import OperatorMetrics
from router_sidecar.egress_proxy import EGRESS_VARIABLES, EgressProxies, has_credentials

log = logging.getLogger(__name__)

DEFAULT_HOLD_DOWN_S = 30.0
DEFAULT_RESYNC_S = 300.0

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Tuning:
    """Operator-wide settings read from the environment (docs/operator.md lists them)."""

    hold_down_s: float = DEFAULT_HOLD_DOWN_S
    resync_s: float = DEFAULT_RESYNC_S
    sidecar: SidecarOptions = field(default_factory=SidecarOptions)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Tuning:
        env = dict(os.environ if env is None else env)
        return cls(
            hold_down_s=_float(env.get("LANEWAY_HOLD_DOWN_SECONDS"), DEFAULT_HOLD_DOWN_S),
            resync_s=_float(env.get("LANEWAY_RESYNC_SECONDS"), DEFAULT_RESYNC_S),
            sidecar=SidecarOptions(
                image=env.get("LANEWAY_SIDECAR_IMAGE") or DEFAULT_IMAGE,
                env=_egress_env(env),
                egress_secret=env.get("LANEWAY_EGRESS_PROXY_SECRET", ""),
            ),
        )


def _egress_env(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The `LANEWAY_EGRESS_*` settings the injected sidecars get: the operator's own, except a
    proxy URL with credentials, which would show in every pod spec (logged, without the value)."""
    found = []
    for name in EGRESS_VARIABLES.values():
        value = env.get(name)
        if not value:
            continue
        if name != EGRESS_VARIABLES["no"] and has_credentials(value):
            log.warning(
                "Not passing %s to injected sidecars: the URL carries credentials, which would "
                "show in every pod spec (give them in egressProxy.credentialsSecret instead); "
                "sidecars reach providers without that proxy", name
            )
            continue
        found.append((name, value))
    return tuple(found)


def _float(text: str | None, default: float) -> float:
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if value >= 0 else default


def not_deleting(meta: Mapping[str, Any], **_: Any) -> bool:
    """kopf filter: the object is not being deleted (it has no deletionTimestamp)."""
    return not meta.get("deletionTimestamp")


class Triggers:
    """One wake-up event per running policy loop, keyed by (namespace, name)."""

    def __init__(self) -> None:
        self._events: dict[Key, asyncio.Event] = {}

    def register(self, key: Key) -> asyncio.Event:
        event = self._events.setdefault(key, asyncio.Event())
        event.set()  # the first pass runs at once
        return event

    def unregister(self, key: Key) -> None:
        self._events.pop(key, None)

    def fire(self, key: Key) -> None:
        event = self._events.get(key)
        if event is not None:
            event.set()


@dataclass
class Runtime:
    kube: Kube
    http: aiohttp.ClientSession
    metrics: OperatorMetrics
    tuning: Tuning
    keys: ApiKeys
    # The egress proxy settings, read once at start; `http` itself does not trust the environment.
    proxies: EgressProxies = field(default_factory=EgressProxies)
    triggers: Triggers = field(default_factory=Triggers)
    # What each lane looked like when its policies were last woken: (generation, phase).
    lane_marks: dict[Key, tuple[object, object]] = field(default_factory=dict)
    # The ServiceAccounts bound for each policy at its last reconcile.
    bound_accounts: dict[Key, frozenset[str]] = field(default_factory=dict)
