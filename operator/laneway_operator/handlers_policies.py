"""kopf handlers for RoutingPolicies and the pods that use them: indexes, triggers, the loop.

Registered on import (`main.py` imports this module). Handler ids:

- `policies_by_lane` (index): (namespace, lane) -> the policies whose routes name that lane,
  including lanes that do not exist yet, so creating one fixes its policies at once;
- `sidecar_accounts` (index): (namespace, policy) -> the ServiceAccounts of the pods labelled
  `routing.laneway.dev/policy=<policy>`, the subjects of the config reader RoleBinding;
- `policy-changed` (event) and `sidecar-pod-changed` (event): wake a policy's loop;
- `policy-reconciler` (daemon): one loop per policy that runs `reconcile.reconcile_policy`
  whenever it is woken, and every `LANEWAY_RESYNC_SECONDS` to repair drift. A compile error is
  reported and then waits for the next change (retrying cannot fix a spec); an API error is
  retried with a growing delay. One loop per policy means reconciles of one policy never overlap.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import kopf

from laneway_operator.compiler import referenced_lanes
from laneway_operator.kube import ApiException, describe_error
from laneway_operator.names import GROUP, POLICIES, POLICY_LABEL, VERSION
from laneway_operator.reconcile import KIND, reconcile_policy
from laneway_operator.runtime import Runtime, not_deleting

log = logging.getLogger(__name__)

MAX_RETRY_DELAY_S = 60.0
# How long a loop may take to finish its step when the policy is deleted or the operator stops.
GRACE_S = 5.0


@kopf.index(GROUP, VERSION, POLICIES, id="policies_by_lane", when=not_deleting)
def index_policy_lanes(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, str]:
    return {(namespace, lane): name for lane in referenced_lanes(body)}


@kopf.index("", "v1", "pods", id="sidecar_accounts", labels={POLICY_LABEL: kopf.PRESENT})
def index_sidecar_accounts(
    namespace: str, labels: kopf.Labels, spec: kopf.Spec, **_: Any
) -> dict[Any, str]:
    return {(namespace, labels[POLICY_LABEL]): spec.get("serviceAccountName") or "default"}


@kopf.on.event(GROUP, VERSION, POLICIES, id="policy-changed")
def policy_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.triggers.fire((namespace, name))


@kopf.on.event("", "v1", "pods", id="sidecar-pod-changed", labels={POLICY_LABEL: kopf.PRESENT})
def sidecar_pod_changed(
    event: kopf.RawEvent,
    namespace: str,
    labels: kopf.Labels,
    spec: kopf.Spec,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    rt: Runtime = memo.runtime
    key = (namespace, labels[POLICY_LABEL])
    account = spec.get("serviceAccountName") or "default"
    # Pods come and go often; only a new account, or a pod leaving, can change the binding.
    if event.get("type") == "DELETED" or account not in rt.bound_accounts.get(key, frozenset()):
        rt.triggers.fire(key)


@kopf.daemon(GROUP, VERSION, POLICIES, id="policy-reconciler",
             cancellation_backoff=GRACE_S, cancellation_timeout=GRACE_S)
async def run_policy(
    namespace: str,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    lanes_by_namespace: kopf.Index[str, dict[str, Any]],
    sidecar_accounts: kopf.Index[tuple[str, str], str],
    **_: Any,
) -> None:
    rt: Runtime = memo.runtime
    key = (namespace, name)
    wake = rt.triggers.register(key)
    delay, failures = rt.tuning.resync_s, 0
    # Only this loop writes the policy's status, so what it wrote last is the freshest copy.
    written: dict[str, Any] | None = None
    try:
        while True:
            await _sleep_until(wake, stopped, delay)
            if stopped:
                return
            wake.clear()
            policy = copy.deepcopy(dict(body))
            lanes = {
                lane["metadata"]["name"]: lane for lane in lanes_by_namespace.get(namespace, [])
            }
            accounts = sorted(set(sidecar_accounts.get(key, [])))
            previous = written if written is not None else (policy.get("status") or {})
            try:
                written = await reconcile_policy(rt, policy, lanes, accounts, previous)
            except ApiException as exc:
                failures += 1
                delay = min(MAX_RETRY_DELAY_S, 2.0**failures)
                rt.metrics.reconciles.labels(KIND, "api_error").inc()
                log.warning("[%s/%s] reconcile failed: %s; retrying in %gs",
                            namespace, name, describe_error(exc), delay)
            else:
                delay, failures = rt.tuning.resync_s, 0
    finally:
        rt.triggers.unregister(key)
        rt.bound_accounts.pop(key, None)


async def _sleep_until(wake: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> None:
    """Return when woken, when stopped, or after `timeout` seconds."""
    waits = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait(timeout))}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
