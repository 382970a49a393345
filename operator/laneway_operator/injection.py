"""The sidecar injection patch: a Pod in, the JSONPatch operations that add the router out.

Pure: `webhook.py` reads the policy's lanes from the API, then calls `build_patch`; tests call it
directly. What a patched Pod gains:

- the router as a native sidecar (an init container with `restartPolicy: Always`, first in the
  list), so it starts before the app containers and stops after them. It runs
  `laneway serve --config .../config.json --watch-configmap <ns>/laneway-<policy>`: the mounted
  ConfigMap is its start-up config, the API watch brings changes within a second
  (docs/config-delivery.md);
- a ConfigMap volume for that config and one Secret volume per Secret the policy's lanes use,
  mounted at `/var/run/secrets/laneway/<secret>` with only the referenced keys;
- `OPENAI_BASE_URL=http://127.0.0.1:4000/v1` on every app container that does not set it;
- when the Pod turns off the service-account token, a projected token for the sidecar alone,
  which needs it to watch its ConfigMap;
- the operator's egress proxy settings (`LANEWAY_EGRESS_*`) on the sidecar, and, when
  `LANEWAY_EGRESS_PROXY_SECRET` names a Secret, that Secret's `username` and `password` mounted
  for it at `/var/run/secrets/laneway-egress-proxy` (optional: a pod without it still starts);
- the annotation `routing.laneway.dev/injected`, so a second pass adds nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from laneway_operator.names import (
    CONFIG_KEY,
    CONFIG_MOUNT,
    INJECTED_ANNOTATION,
    SECRETS_DIR,
    SIDECAR_NAME,
    SIDECAR_PORT,
    config_map_name,
)
from router_sidecar.egress_proxy import CREDENTIALS_MOUNT, CREDENTIALS_VARIABLE

BASE_URL_ENV = "OPENAI_BASE_URL"
CONFIG_VOLUME = "laneway-config"
KUBE_API_VOLUME = "laneway-kube-api"
EGRESS_VOLUME = "laneway-egress-proxy"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_IMAGE = "laneway:dev"


@dataclass(frozen=True)
class SidecarOptions:
    """How the injected container is built; the image comes from `LANEWAY_SIDECAR_IMAGE`, `env`
    (name, value pairs added to the container) from the operator's `LANEWAY_EGRESS_*` settings,
    `egress_secret` (the Secret with the egress proxy's `username` and `password`, in the pod's
    namespace, mounted when set) from `LANEWAY_EGRESS_PROXY_SECRET`."""

    image: str = DEFAULT_IMAGE
    port: int = SIDECAR_PORT
    cpu_request: str = "50m"
    memory_request: str = "64Mi"
    memory_limit: str = "256Mi"
    run_as_user: int = 65532
    env: tuple[tuple[str, str], ...] = ()
    egress_secret: str = ""


Patch = list[dict[str, Any]]


def secrets_of(lanes: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Secret name -> sorted keys, from the `spec.provider.apiKeySecretRef` of ModelLanes."""
    found: dict[str, set[str]] = {}
    for lane in lanes:
        provider = (lane.get("spec") or {}).get("provider") or {}
        ref = provider.get("apiKeySecretRef") or {}
        if ref.get("name") and ref.get("key"):
            found.setdefault(ref["name"], set()).add(ref["key"])
    return {name: sorted(keys) for name, keys in sorted(found.items())}


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy a Kubernetes label selector (matchLabels and matchExpressions)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def is_injected(pod: Mapping[str, Any]) -> bool:
    """Whether the Pod already has the sidecar (by annotation or by container name)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if INJECTED_ANNOTATION in annotations:
        return True
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return any(c.get("name") == SIDECAR_NAME for c in containers)


def build_patch(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    policy: str,
    secrets: Mapping[str, Sequence[str]],
    options: SidecarOptions,
) -> Patch:
    """JSONPatch operations that inject the sidecar; empty when the Pod already has it."""
    if is_injected(pod):
        return []
    spec = pod.get("spec") or {}
    own_token = spec.get("automountServiceAccountToken") is False
    volumes = [_config_volume(policy), *(_secret_volume(n, k) for n, k in secrets.items())]
    if own_token:
        volumes.append(_kube_api_volume())
    if options.egress_secret:
        volumes.append(_egress_credentials_volume(options.egress_secret))
    container = sidecar_container(
        namespace=namespace, policy=policy, secrets=secrets, options=options, own_token=own_token
    )
    patch: Patch = []
    patch += _annotate(pod)
    patch += _append(spec, "volumes", volumes)
    patch += _prepend(spec, "initContainers", container)
    patch += _base_url_env(spec, options.port)
    return patch


def sidecar_container(
    *,
    namespace: str,
    policy: str,
    secrets: Mapping[str, Sequence[str]],
    options: SidecarOptions,
    own_token: bool = False,
) -> dict[str, Any]:
    """The router container, as a native sidecar."""
    mounts = [{"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT, "readOnly": True}]
    mounts += [
        {"name": secret_volume_name(name), "mountPath": f"{SECRETS_DIR}/{name}", "readOnly": True}
        for name in secrets
    ]
    if own_token:
        mounts.append({"name": KUBE_API_VOLUME, "mountPath": SA_MOUNT, "readOnly": True})
    env = [
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *({"name": name, "value": value} for name, value in options.env),
    ]
    if options.egress_secret:
        mounts.append({"name": EGRESS_VOLUME, "mountPath": CREDENTIALS_MOUNT, "readOnly": True})
        env.append({"name": CREDENTIALS_VARIABLE, "value": CREDENTIALS_MOUNT})
    port = options.port
    return {
        "name": SIDECAR_NAME,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "command": ["laneway"],
        "args": [
            "serve",
            "--config", f"{CONFIG_MOUNT}/{CONFIG_KEY}",
            # The kubelet probes the pod IP, so the router cannot listen on loopback only.
            "--host", "0.0.0.0",
            "--port", str(port),
            "--secrets-dir", SECRETS_DIR,
            "--watch-configmap", f"{namespace}/{config_map_name(policy)}",
        ],
        "env": env,
        "ports": [{"name": "laneway", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": port},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
            "limits": {"memory": options.memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": options.run_as_user,
            "runAsGroup": options.run_as_user,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }


def secret_volume_name(secret: str) -> str:
    """A volume name for a Secret: stable, and short enough for any Secret name."""
    return "laneway-secret-" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def _config_volume(policy: str) -> dict[str, Any]:
    return {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(policy)}}


def _secret_volume(name: str, keys: Sequence[str]) -> dict[str, Any]:
    return {
        "name": secret_volume_name(name),
        "secret": {"secretName": name, "items": [{"key": k, "path": k} for k in keys]},
    }


def _egress_credentials_volume(secret: str) -> dict[str, Any]:
    # Optional: without the Secret the pod still starts, and the sidecar says what it misses.
    return {
        "name": EGRESS_VOLUME,
        "secret": {
            "secretName": secret,
            "optional": True,
            "items": [{"key": k, "path": k} for k in ("username", "password")],
        },
    }


def _kube_api_volume() -> dict[str, Any]:
    return {
        "name": KUBE_API_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]
        },
    }


def _pointer(token: str) -> str:
    """One JSON Pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def _annotate(pod: Mapping[str, Any]) -> Patch:
    if (pod.get("metadata") or {}).get("annotations") is None:
        return [{"op": "add", "path": "/metadata/annotations",
                 "value": {INJECTED_ANNOTATION: "true"}}]
    path = "/metadata/annotations/" + _pointer(INJECTED_ANNOTATION)
    return [{"op": "add", "path": path, "value": "true"}]


def _append(spec: Mapping[str, Any], field: str, items: list[dict[str, Any]]) -> Patch:
    if not spec.get(field):
        return [{"op": "add", "path": f"/spec/{field}", "value": items}]
    return [{"op": "add", "path": f"/spec/{field}/-", "value": item} for item in items]


def _prepend(spec: Mapping[str, Any], field: str, item: dict[str, Any]) -> Patch:
    if not spec.get(field):
        return [{"op": "add", "path": f"/spec/{field}", "value": [item]}]
    return [{"op": "add", "path": f"/spec/{field}/0", "value": item}]


def _base_url_env(spec: Mapping[str, Any], port: int) -> Patch:
    value = {"name": BASE_URL_ENV, "value": f"http://127.0.0.1:{port}/v1"}
    patch: Patch = []
    for i, container in enumerate(spec.get("containers") or []):
        env = container.get("env")
        if not env:
            patch.append({"op": "add", "path": f"/spec/containers/{i}/env", "value": [value]})
        elif not any(item.get("name") == BASE_URL_ENV for item in env):
            patch.append({"op": "add", "path": f"/spec/containers/{i}/env/-", "value": value})
    return patch
