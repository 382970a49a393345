"""Plain-JSON access to the Kubernetes API, for what kopf's own patching does not cover.

The reconciler (ConfigMaps, Roles, RoleBindings, status), the probe loops (Secrets, status) and
the webhook (RoutingPolicies, ModelLanes) call `Kube`. It sits on kubernetes_asyncio's ApiClient
for authentication (in-cluster service account, or the kubeconfig in `KUBECONFIG`) and speaks
dicts, so bodies look exactly like the YAML in the docs. Errors are kubernetes_asyncio's
`ApiException`, with `.status`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from laneway_operator.names import GROUP, VERSION

log = logging.getLogger(__name__)

__all__ = [
    "ApiException",
    "Kube",
    "NameTaken",
    "core_path",
    "crd_path",
    "describe_error",
    "group_path",
]

REQUEST_TIMEOUT_S = 30
MERGE_PATCH = "application/merge-patch+json"
_OBJECT = {200: "object", 201: "object", 202: "object"}


def core_path(plural: str, namespace: str | None = None, name: str | None = None) -> str:
    """Path of a core (v1) collection or object."""
    return _path("/api/v1", plural, namespace, name)


def group_path(
    group: str,
    version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """Path of a collection or object in an API group, e.g. rbac.authorization.k8s.io/v1."""
    path = _path(f"/apis/{group}/{version}", plural, namespace, name)
    return f"{path}/{subresource}" if subresource else path


def crd_path(
    plural: str, namespace: str, name: str | None = None, subresource: str | None = None
) -> str:
    """Path of a Laneway custom resource (or its status)."""
    return group_path(GROUP, VERSION, plural, namespace, name, subresource)


def _path(prefix: str, plural: str, namespace: str | None, name: str | None) -> str:
    path = prefix
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


class Kube:
    """A few JSON verbs over one authenticated ApiClient."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    @classmethod
    async def connect(cls) -> Kube:
        """In a pod, the service account; elsewhere, `KUBECONFIG` (or ~/.kube/config)."""
        configuration = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            await config.load_kube_config(client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self.api.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        return await self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            response_types_map=_OBJECT,
            _return_http_data_only=True,
            _request_timeout=REQUEST_TIMEOUT_S,
        )

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return await self._call("GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        query = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        answer = await self._call("GET", path, query=query)
        return list(answer.get("items") or [])

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, body=dict(body))

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", path, body=dict(body), content_type=MERGE_PATCH)

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("PUT", path, body=dict(body))

    async def delete(self, path: str) -> None:
        """Delete the object; one that is already gone is fine."""
        try:
            await self._call("DELETE", path)
        except ApiException as exc:
            if exc.status != 404:
                raise


def describe_error(exc: ApiException) -> str:
    """One line for logs and status: the HTTP status and the API server's message."""
    message = ""
    body = getattr(exc, "body", None)
    if isinstance(body, str) and body.startswith("{"):
        try:
            message = json.loads(body).get("message", "")
        except ValueError:
            message = ""
    return f"{exc.status} {exc.reason or ''}".strip() + (f": {message}" if message else "")


class NameTaken(Exception):
    """An object the operator would write exists already and belongs to someone else."""

    reason = "NameTaken"


async def ensure_object(
    kube: Kube, collection: str, wanted: Mapping[str, Any], fields: tuple[str, ...]
) -> str:
    """Create `wanted` in `collection`, or patch the `fields`, labels, annotations and owner
    references that differ. Returns "created", "updated" or "unchanged".

    An existing object is changed only when it is the operator's own (see `_not_ours`);
    otherwise NameTaken, and the object is left as it is."""
    name = wanted["metadata"]["name"]
    current = await kube.get(f"{collection}/{quote(name, safe='')}")
    if current is None:
        await kube.create(collection, wanted)
        return "created"
    why = _not_ours(current, wanted)
    if why is not None:
        kind = wanted.get("kind", "object")
        namespace = wanted["metadata"].get("namespace")
        where = f"{namespace}/{name}" if namespace else name
        raise NameTaken(
            f"{kind} {where} exists and was not made by Laneway ({why}); Laneway does not "
            f"overwrite it: delete or rename it, and the operator creates its own"
        )
    patch = _object_patch(current, wanted, fields)
    if not patch:
        return "unchanged"
    await kube.merge_patch(f"{collection}/{quote(name, safe='')}", patch)
    return "updated"


def _not_ours(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """None when `current` may be brought in line with `wanted`, else why not.

    It may when its controller is a wanted owner (by kind and name: a policy deleted and made
    again keeps its objects), or when it has no controller and carries every wanted label."""
    have, want = current.get("metadata") or {}, wanted["metadata"]
    controller = next((ref for ref in have.get("ownerReferences") or [] if ref.get("controller")),
                      None)
    if controller is not None:
        key = (controller.get("apiVersion"), controller.get("kind"), controller.get("name"))
        owners = {(ref["apiVersion"], ref["kind"], ref["name"])
                  for ref in want.get("ownerReferences") or []}
        if key in owners:
            return None
        return f"it is controlled by {controller.get('kind')} {controller.get('name')}"
    labels = have.get("labels") or {}
    missing = sorted(k for k, v in (want.get("labels") or {}).items() if labels.get(k) != v)
    if not missing:
        return None
    return f"it has no owner and lacks the label {missing[0]}"


def _object_patch(
    current: Mapping[str, Any], wanted: Mapping[str, Any], fields: tuple[str, ...]
) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for field in fields:
        # The API server drops empty lists and maps, so "absent" and "empty" are the same here.
        have_value, want_value = current.get(field) or None, wanted.get(field) or None
        if have_value == want_value:
            continue
        if isinstance(have_value, dict) and isinstance(want_value, dict):
            # A merge patch merges objects: drop the keys we do not want explicitly.
            want_value = {**{k: None for k in have_value if k not in want_value}, **want_value}
        patch[field] = want_value
    meta: dict[str, Any] = {}
    have, want = current.get("metadata") or {}, wanted["metadata"]
    for key in ("labels", "annotations"):
        missing = {k: v for k, v in (want.get(key) or {}).items()
                   if (have.get(key) or {}).get(k) != v}
        if missing:
            meta[key] = missing
    owners = want.get("ownerReferences") or []
    have_uids = {ref.get("uid") for ref in have.get("ownerReferences") or []}
    if any(ref["uid"] not in have_uids for ref in owners):
        meta["ownerReferences"] = owners
    if meta:
        patch["metadata"] = meta
    return patch
