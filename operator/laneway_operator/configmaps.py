"""The ConfigMap that carries a policy's compiled router config to its sidecars.

Called by the reconciler (`reconcile.py`) after a successful compile. One ConfigMap per policy,
`laneway-<policy>`, key `config.json`, holding `render_config` text byte for byte; owned by the
policy so that deleting the policy deletes it. It is written only when its text changes, so an
operator restart or a repeated reconcile leaves its resourceVersion alone and sidecars see no
event (docs/config-delivery.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from laneway_operator.kube import Kube, core_path, ensure_object
from laneway_operator.names import (
    API_VERSION,
    CONFIG_KEY,
    CONFIG_VERSION_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    POLICY_KIND,
    POLICY_LABEL,
    config_map_name,
)


def owner_reference(policy: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to the policy: the garbage collector deletes what it owns."""
    meta = policy["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": POLICY_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def owned_metadata(policy: Mapping[str, Any], name: str) -> dict[str, Any]:
    """metadata for an object the operator keeps for `policy`."""
    meta = policy["metadata"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, POLICY_LABEL: meta["name"]},
        "ownerReferences": [owner_reference(policy)],
    }


def config_map_body(policy: Mapping[str, Any], text: str, version: str) -> dict[str, Any]:
    metadata = owned_metadata(policy, config_map_name(policy["metadata"]["name"]))
    metadata["annotations"] = {CONFIG_VERSION_ANNOTATION: version}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
            "data": {CONFIG_KEY: text}}


async def ensure_config_map(kube: Kube, policy: Mapping[str, Any], text: str, version: str) -> str:
    """Create or update the policy's ConfigMap; "created", "updated" or "unchanged"."""
    body = config_map_body(policy, text, version)
    collection = core_path("configmaps", policy["metadata"]["namespace"])
    return await ensure_object(kube, collection, body, ("data",))
