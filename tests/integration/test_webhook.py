"""Sidecar injection through the real admission chain: API server -> operator webhook -> Pod.

The test registers a MutatingWebhookConfiguration for its own namespace only, pointing at the
operator's HTTPS server on 127.0.0.1 with a CA made by trustme, as the Helm chart does in a
cluster (objectSelector on the policy label, failurePolicy Fail).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.controlplane.plane import ControlPlane
from tests.integration.operator_harness import (
    OperatorProcess,
    apply,
    condition,
    free_port,
    get,
    lane,
    operator_fleet,
    policy,
    secret,
    start_operator,
    wait_for,
    wait_for_default_account,
)

pytestmark = pytest.mark.controlplane

IMAGE = "registry.example/laneway:test"


@pytest.fixture
def operators(
    controlplane: ControlPlane, crds: list[str], namespace: str, request: pytest.FixtureRequest
) -> Iterator[list[OperatorProcess]]:
    yield from operator_fleet(controlplane, namespace, request)


@pytest.fixture
def webhook(
    controlplane: ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """TLS material, a port, and a MutatingWebhookConfiguration scoped to the test namespace."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    port = free_port()
    name = f"laneway-test-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "inject.routing.laneway.dev",
            "clientConfig": {
                "url": f"https://127.0.0.1:{port}/mutate-pods",
                "caBundle": base64.b64encode(ca.cert_pem.bytes()).decode(),
            },
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "objectSelector": {"matchExpressions": [
                {"key": "routing.laneway.dev/policy", "operator": "Exists"}]},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
        }],
    }
    apply(controlplane, config)
    args = ["--webhook-host", "127.0.0.1", "--webhook-port", str(port),
            "--webhook-cert", str(tmp_path / "tls.crt"), "--webhook-key", str(tmp_path / "tls.key")]
    try:
        yield {"args": args, "port": port, "ca": str(tmp_path / "ca.crt")}
    finally:
        controlplane.kubectl("delete", "mutatingwebhookconfiguration", name, check=False)


def pod(namespace: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }


def create(plane: ControlPlane, body: dict[str, Any], *, dry_run: bool = False):
    args = ["create", "-f", "-", "-o", "json"] + (["--dry-run=server"] if dry_run else [])
    return plane.kubectl(*args, input=json.dumps(body), check=False)


def injected(plane: ControlPlane, body: dict[str, Any]) -> bool:
    """Whether a server-side dry run of `body` comes back injected (the webhook is live)."""
    proc = create(plane, body, dry_run=True)
    return proc.returncode == 0 and "laneway-router" in proc.stdout


def test_a_labelled_pod_comes_back_from_the_api_server_with_the_sidecar(
    controlplane: ControlPlane,
    namespace: str,
    operators: list[OperatorProcess],
    webhook: dict[str, Any],
    tmp_path: Path,
) -> None:
    wait_for_default_account(controlplane, namespace)
    apply(controlplane, secret(namespace), lane(namespace, "fast", "http://127.0.0.1:9/v1"),
          policy(namespace, "bot", {"fast": ["fast"]}))
    egress = {"LANEWAY_EGRESS_HTTPS_PROXY": "http://proxy.corp.example:3128",
              "LANEWAY_EGRESS_NO_PROXY": ".svc,10.0.0.0/8"}
    operators.append(start_operator(
        controlplane, tmp_path, namespace, *webhook["args"],
        env={"LANEWAY_SIDECAR_IMAGE": IMAGE, "LANEWAY_EGRESS_PROXY_SECRET": "egress-proxy",
             **egress}))
    labelled = pod(namespace, "app", {"routing.laneway.dev/policy": "bot", "app": "bot"})
    wait_for(lambda: injected(controlplane, labelled), timeout=30,
             what="the webhook to be called by the API server")

    created = json.loads(create(controlplane, labelled).stdout)

    router = created["spec"]["initContainers"][0]
    assert router["name"] == "laneway-router"
    assert router["image"] == IMAGE
    assert router["restartPolicy"] == "Always"
    assert f"{namespace}/laneway-bot" in router["args"]
    volumes = {v["name"]: v for v in created["spec"]["volumes"]}
    assert volumes["laneway-config"]["configMap"]["name"] == "laneway-bot"
    assert any(v.get("secret", {}).get("secretName") == "provider" for v in volumes.values())
    mounts = {m["mountPath"] for m in router["volumeMounts"]}
    assert "/var/run/secrets/laneway/provider" in mounts
    # The operator's egress proxy settings reach the sidecar, and only the sidecar.
    router_env = {e["name"]: e.get("value") for e in router["env"]}
    assert egress.items() <= router_env.items()
    # Its credentials Secret is mounted for the sidecar (optional: it does not exist here).
    assert volumes["laneway-egress-proxy"]["secret"] == {
        "secretName": "egress-proxy", "optional": True, "defaultMode": 420,
        "items": [{"key": "username", "path": "username"},
                  {"key": "password", "path": "password"}]}
    assert router_env["LANEWAY_EGRESS_PROXY_CREDENTIALS"] == "/var/run/secrets/laneway-egress-proxy"
    env = {e["name"]: e.get("value") for e in created["spec"]["containers"][0]["env"]}
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:4000/v1"
    assert not [name for name in env if "PROXY" in name]
    assert created["metadata"]["annotations"]["routing.laneway.dev/injected"] == "true"

    # Asking the webhook again about the injected pod adds nothing.
    answer = review(webhook, created)
    assert answer["allowed"] is True and "patch" not in answer

    # A pod without the label is never sent to the webhook and comes back as it went in.
    plain = json.loads(create(controlplane, pod(namespace, "plain")).stdout)
    assert "initContainers" not in plain["spec"]
    assert "routing.laneway.dev/injected" not in (plain["metadata"].get("annotations") or {})
    assert "env" not in plain["spec"]["containers"][0]

    # The operator binds the pod's ServiceAccount so that its sidecar can read the config.
    wait_for(lambda: any(s["name"] == "default" for s in (get(
        controlplane, "rolebinding", "laneway-config-bot", namespace) or {}).get("subjects") or []),
        timeout=20, what="the default ServiceAccount bound to the config reader Role")


def review(webhook: dict[str, Any], pod_body: dict[str, Any]) -> dict[str, Any]:
    """POST an AdmissionReview for `pod_body` straight to the webhook; its response part."""
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "test-uid", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE", "namespace": pod_body["metadata"]["namespace"],
        "object": pod_body}}
    request = urllib.request.Request(
        f"https://127.0.0.1:{webhook['port']}/mutate-pods", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=webhook["ca"])
    with urllib.request.urlopen(request, timeout=10, context=context) as resp:
        answer = json.loads(resp.read())["response"]
    assert answer["uid"] == "test-uid"
    return answer


def test_a_pod_naming_a_missing_policy_is_denied_with_the_fix(
    controlplane: ControlPlane,
    namespace: str,
    operators: list[OperatorProcess],
    webhook: dict[str, Any],
    tmp_path: Path,
) -> None:
    wait_for_default_account(controlplane, namespace)
    operators.append(start_operator(controlplane, tmp_path, namespace, *webhook["args"]))
    orphan = pod(namespace, "orphan", {"routing.laneway.dev/policy": "nope"})

    proc = wait_for(lambda: (p := create(controlplane, orphan)).returncode != 0 and p,
                    timeout=30, what="the webhook to deny the pod")

    assert "RoutingPolicy" in proc.stderr and "nope" in proc.stderr
    assert "does not exist" in proc.stderr
    assert get(controlplane, "pod", "orphan", namespace) is None


def test_a_policy_that_does_not_compile_still_injects_with_warnings(
    controlplane: ControlPlane,
    namespace: str,
    operators: list[OperatorProcess],
    webhook: dict[str, Any],
    tmp_path: Path,
) -> None:
    wait_for_default_account(controlplane, namespace)
    apply(controlplane, policy(namespace, "broken", {"fast": ["missing"]}))
    operators.append(start_operator(controlplane, tmp_path, namespace, *webhook["args"]))
    wait_for(lambda: condition(get(controlplane, "routingpolicy", "broken", namespace),
                               "Compiled").get("status") == "False",
             timeout=20, what="the policy to fail to compile")
    body = pod(namespace, "early", {"routing.laneway.dev/policy": "broken"})
    wait_for(lambda: injected(controlplane, body), timeout=30, what="the webhook")

    proc = create(controlplane, body)

    assert proc.returncode == 0
    # kubectl prints admission warnings on stderr; the pod has no `app: broken` label either.
    assert "does not compile (LaneNotFound)" in proc.stderr
    assert "do not match spec.selector of RoutingPolicy broken" in proc.stderr


def test_with_the_operator_stopped_unlabelled_pods_are_still_created(
    controlplane: ControlPlane,
    namespace: str,
    operators: list[OperatorProcess],
    webhook: dict[str, Any],
    tmp_path: Path,
) -> None:
    wait_for_default_account(controlplane, namespace)
    apply(controlplane, secret(namespace), lane(namespace, "fast", "http://127.0.0.1:9/v1"),
          policy(namespace, "bot", {"fast": ["fast"]}))
    operator = start_operator(controlplane, tmp_path, namespace, *webhook["args"])
    operators.append(operator)
    labelled = pod(namespace, "app", {"routing.laneway.dev/policy": "bot"})
    wait_for(lambda: injected(controlplane, labelled), timeout=30, what="the webhook")

    assert operator.stop() == 0

    assert create(controlplane, pod(namespace, "plain")).returncode == 0
    refused = create(controlplane, labelled)
    assert refused.returncode != 0  # failurePolicy Fail: no pod without its sidecar
    assert "inject.routing.laneway.dev" in refused.stderr
