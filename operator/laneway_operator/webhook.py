"""The mutating admission webhook that injects the router sidecar, served over HTTPS.

`main.py` starts it on `--webhook-port` when `--webhook-cert` and `--webhook-key` are given; the
Helm chart registers a MutatingWebhookConfiguration that sends Pod CREATEs with the label
`routing.laneway.dev/policy` to `POST /mutate-pods` (AdmissionReview v1). Every replica serves it,
paused peers included: it only reads the API (the policy and its lanes) and never writes, so the
configuration can say `sideEffects: None`.

Decisions:
- no label, not a Pod CREATE, or already injected: allowed unchanged;
- the label names a RoutingPolicy that does not exist: denied, with a message that says how to
  fix it. An app whose sidecar cannot route would fail on every request, so it is safer not to
  start it (a ReplicaSet retries, and succeeds once the policy exists);
- the policy cannot be read (API trouble): denied, the API server retries the create;
- otherwise: allowed with the JSONPatch from `injection.build_patch`, plus warnings when the
  policy does not compile yet (the pod then waits for its ConfigMap) or when the pod's labels do
  not match the policy's `spec.selector`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import ssl
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from laneway_operator.compiler import referenced_lanes
from laneway_operator.injection import (
    SidecarOptions,
    build_patch,
    is_injected,
    secrets_of,
    selector_matches,
)
from laneway_operator.kube import ApiException, Kube, crd_path, describe_error
from laneway_operator.metrics import OperatorMetrics
from laneway_operator.names import LANES, POLICIES, POLICY_LABEL
from laneway_operator.status import find_condition

log = logging.getLogger(__name__)

PATH = "/mutate-pods"
MAX_BODY_BYTES = 3 * 1024 * 1024
CERT_CHECK_INTERVAL_S = 30.0


class Denied(Exception):
    """The pod must not be created; the message tells its author why and what to do."""

    def __init__(self, message: str, code: int = 403) -> None:
        super().__init__(message)
        self.code = code


class InjectionWebhook:
    """Answers AdmissionReviews for Pods."""

    def __init__(self, kube: Kube, options: SidecarOptions, metrics: OperatorMetrics) -> None:
        self.kube = kube
        self.options = options
        self.metrics = metrics

    async def review(self, review: Mapping[str, Any]) -> dict[str, Any]:
        """The AdmissionReview answer for one AdmissionReview request."""
        request = review.get("request") or {}
        response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
        try:
            patch, warnings = await self._mutation(request)
        except Denied as exc:
            self.metrics.webhook_requests.labels("denied").inc()
            log.info("denied pod in %s: %s", request.get("namespace"), exc)
            response.update(allowed=False, status={"code": exc.code, "message": str(exc)})
        else:
            result = "injected" if patch else "skipped"
            self.metrics.webhook_requests.labels(result).inc()
            if patch:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
            if warnings:
                response["warnings"] = warnings
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": response}

    async def _mutation(self, request: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
        pod = request.get("object") or {}
        labels = (pod.get("metadata") or {}).get("labels") or {}
        policy_name = labels.get(POLICY_LABEL)
        kind = (request.get("kind") or {}).get("kind")
        if kind != "Pod" or request.get("operation") != "CREATE" or not policy_name:
            return [], []
        if is_injected(pod):
            return [], []
        namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace")
        policy = await self._policy(namespace, policy_name)
        lanes = await self._lanes(namespace, referenced_lanes(policy))
        patch = build_patch(pod, namespace=namespace, policy=policy_name,
                            secrets=secrets_of(lanes), options=self.options)
        return patch, _warnings(policy, labels)

    async def _policy(self, namespace: str, name: str) -> Mapping[str, Any]:
        try:
            policy = await self.kube.get(crd_path(POLICIES, namespace, name))
        except ApiException as exc:
            raise Denied(f"cannot read RoutingPolicy {namespace}/{name} ({describe_error(exc)}); "
                         "try again", code=500) from exc
        if policy is None:
            raise Denied(
                f"RoutingPolicy {namespace}/{name} does not exist: create it before pods that "
                f"use it, or remove the label {POLICY_LABEL} from the pod"
            )
        return policy

    async def _lanes(self, namespace: str, names: list[str]) -> list[Mapping[str, Any]]:
        try:
            lanes = await self.kube.list(crd_path(LANES, namespace))
        except ApiException as exc:
            raise Denied(f"cannot list ModelLanes in {namespace} ({describe_error(exc)}); "
                         "try again", code=500) from exc
        wanted = set(names)
        return [lane for lane in lanes if (lane.get("metadata") or {}).get("name") in wanted]


def _warnings(policy: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    """Things the pod's author should know; they do not stop the pod."""
    name = policy["metadata"]["name"]
    warnings = []
    compiled = find_condition((policy.get("status") or {}).get("conditions"), "Compiled")
    if compiled is not None and compiled.get("status") == "False":
        warnings.append(f"RoutingPolicy {name} does not compile ({compiled.get('reason')}); the "
                        "sidecar starts once its ConfigMap exists")
    if not selector_matches((policy.get("spec") or {}).get("selector"), labels):
        warnings.append(f"the pod's labels do not match spec.selector of RoutingPolicy {name}; "
                        "the sidecar is injected because of the label "
                        f"{POLICY_LABEL}={name}")
    return warnings


def build_app(webhook: InjectionWebhook) -> web.Application:
    async def mutate(request: web.Request) -> web.Response:
        try:
            review = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be an AdmissionReview"}, status=400)
        return web.json_response(await webhook.review(review))

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(PATH, mutate)
    return app


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


async def reload_certificates(
    context: ssl.SSLContext,
    cert_file: str,
    key_file: str,
    interval_s: float = CERT_CHECK_INTERVAL_S,
) -> None:
    """Load a renewed certificate (e.g. from cert-manager) into the running server."""
    seen = _mtimes(cert_file, key_file)
    while True:
        await asyncio.sleep(interval_s)
        now = _mtimes(cert_file, key_file)
        if now == seen:
            continue
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            log.warning("webhook certificate changed but cannot be loaded (%s); keeping the old "
                        "one and checking again in %gs", exc, interval_s)
            continue
        seen = now
        log.info("webhook certificate reloaded from %s", cert_file)


def _mtimes(*paths: str) -> tuple[float, ...]:
    out = []
    for path in paths:
        with contextlib.suppress(OSError):
            out.append(os.stat(path).st_mtime)
    return tuple(out)


async def serve_webhook(
    webhook: InjectionWebhook, *, host: str, port: int, context: ssl.SSLContext
) -> web.AppRunner:
    runner = web.AppRunner(build_app(webhook), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    return runner
