"""Runs the operator: kopf with Laneway's settings, plus the metrics and webhook servers.

Called by `laneway operator` (`laneway/cmd_operator.py`). Importing the handler modules registers
every kopf handler; `serve` then starts, in one event loop:

- `/metrics`, `/healthz`, `/readyz` on `--metrics-port`;
- the sidecar injection webhook (HTTPS) on `--webhook-port`, when a certificate is given;
- kopf, cluster-wide or for the `--namespace`s given, with Laneway's finalizer and annotation
  prefix (`routing.laneway.dev/...`) instead of kopf's defaults.

Replicas: unless `--standalone`, replicas coordinate through kopf peering (the kopf.dev CRDs the
Helm chart installs). Each replica takes a random priority; the highest one works, the others
pause their handlers (they keep serving the webhook and metrics) and take over when it leaves:
at once on a graceful exit, or when its peering record expires. Without the peering CRDs the
operator runs standalone and says so. SIGTERM and SIGINT stop it gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import kopf
from kubernetes_asyncio.config import ConfigException

from laneway_operator import handlers_lanes, handlers_policies  # noqa: F401  (registration)
from laneway_operator.api_keys import ApiKeys
from laneway_operator.kube import ApiException, Kube, describe_error, group_path
from laneway_operator.metrics import OperatorMetrics, serve_metrics
from laneway_operator.names import FINALIZER, GROUP, PEERING_NAME, POLICY_LABEL
from laneway_operator.runtime import Runtime, Tuning
from laneway_operator.webhook import (
    InjectionWebhook,
    reload_certificates,
    serve_webhook,
    tls_context,
)

log = logging.getLogger(__name__)

PEERING_LIFETIME_S = 30


class StartupError(Exception):
    """The operator cannot start; the message says why."""


@dataclass(frozen=True)
class OperatorOptions:
    """The `laneway operator` command line, plus the environment it reads."""

    namespaces: Sequence[str] = ()
    standalone: bool = False
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    webhook_host: str = "0.0.0.0"
    webhook_port: int = 9443
    webhook_cert: str | None = None
    webhook_key: str | None = None
    peering_name: str = PEERING_NAME
    peering_priority: int | None = None  # None: random, so that exactly one replica works
    tuning: Tuning = field(default_factory=Tuning)


def identity() -> str:
    """This replica's name among peers: the pod name in a cluster, user@host elsewhere."""
    pod = os.environ.get("POD_ID") or os.environ.get("POD_NAME")
    if pod:
        return pod
    return f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}"


def build_settings(*, peering: bool, peering_name: str) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.reporting_component = "laneway-operator"
    settings.posting.reporting_instance = os.environ.get("POD_NAME") or socket.gethostname()
    settings.posting.event_name_prefix = "laneway-"
    settings.peering.name = peering_name
    settings.peering.standalone = not peering
    settings.peering.lifetime = PEERING_LIFETIME_S
    settings.peering.stealth = True
    # Only labelled pods matter (the RoleBinding subjects): let the API server filter them.
    settings.watching.label_selectors["", "v1", "pods"] = POLICY_LABEL
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.process.ultimate_exiting_timeout = 60
    return settings


async def use_peering(
    kube: Kube, namespaces: Sequence[str], *, standalone: bool, name: str
) -> bool:
    """Whether to peer: not when asked to run alone, nor without the kopf.dev peering CRDs.

    Makes sure the peering object exists, since kopf expects it to.
    """
    if standalone:
        return False
    plural = "kopfpeerings" if namespaces else "clusterkopfpeerings"
    crds = group_path("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    if await kube.get(f"{crds}/{plural}.kopf.dev") is None:
        log.warning("the kopf.dev peering CRDs are not installed: running standalone, so run "
                    "only one replica (install them, e.g. with the Helm chart, to run more)")
        return False
    kind = "KopfPeering" if namespaces else "ClusterKopfPeering"
    for namespace in namespaces or [None]:
        body = {"apiVersion": "kopf.dev/v1", "kind": kind,
                "metadata": {"name": name, "namespace": namespace}}
        path = group_path("kopf.dev", "v1", plural, namespace)
        # The Helm chart creates it; without a create permission this is a harmless 403.
        with contextlib.suppress(ApiException):
            if await kube.get(f"{path}/{name}") is None:
                await kube.create(path, body)
    return True


async def serve(options: OperatorOptions) -> None:
    """Run until SIGTERM or SIGINT; StartupError when it cannot start."""
    try:
        kube = await Kube.connect()
    except (ConfigException, OSError) as exc:
        raise StartupError(f"no Kubernetes credentials: {exc}; run in a pod or set "
                           "KUBECONFIG") from exc
    # Probes pick their egress proxy from HTTPS_PROXY/NO_PROXY as the sidecar does
    # (Runtime.proxies), so the session itself does not read the environment.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
    metrics = OperatorMetrics()
    runtime = Runtime(kube=kube, http=http, metrics=metrics, tuning=options.tuning,
                      keys=ApiKeys(kube))
    ready = asyncio.Event()
    runners = [await serve_metrics(metrics, host=options.metrics_host,
                                   port=options.metrics_port, ready=ready.is_set)]
    background: list[asyncio.Task[None]] = []
    try:
        if options.webhook_cert and options.webhook_key:
            context = tls_context(options.webhook_cert, options.webhook_key)
            webhook = InjectionWebhook(kube, options.tuning.sidecar, metrics)
            runners.append(await serve_webhook(webhook, host=options.webhook_host,
                                               port=options.webhook_port, context=context))
            background.append(asyncio.create_task(
                reload_certificates(context, options.webhook_cert, options.webhook_key)))
            log.info("sidecar injection webhook listening on %s:%d",
                     options.webhook_host, options.webhook_port)
        else:
            log.info("sidecar injection webhook off: no --webhook-cert/--webhook-key given")
        await _run_kopf(options, runtime, ready)
    finally:
        for task in background:
            task.cancel()
        for runner in runners:
            await runner.cleanup()
        await http.close()
        await kube.close()


async def _run_kopf(options: OperatorOptions, runtime: Runtime, ready: asyncio.Event) -> None:
    try:
        peering = await use_peering(runtime.kube, options.namespaces,
                                    standalone=options.standalone, name=options.peering_name)
    except ApiException as exc:
        # Guessing "standalone" could let two replicas fight; better to stop and be restarted.
        raise StartupError(f"cannot tell whether to peer with other replicas "
                           f"({describe_error(exc)})") from exc
    priority = options.peering_priority
    if priority is None:
        priority = random.randint(1, 2**31 - 1) if peering else 0
    log.info("operator starting: %s, %s, hold-down %gs",
             f"namespaces {', '.join(options.namespaces)}" if options.namespaces
             else "cluster-wide",
             f"peering as {identity()} (priority {priority})" if peering else "standalone",
             options.tuning.hold_down_s)
    await kopf.operator(
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        standalone=not peering,
        peering_name=options.peering_name if peering else None,
        priority=priority,
        identity=identity(),  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        settings=build_settings(peering=peering, peering_name=options.peering_name),
        memo=kopf.Memo(runtime=runtime),
        ready_flag=ready,
    )
