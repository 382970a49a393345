"""Least-privilege API access for sidecars: read their own policy's ConfigMap, nothing else.

Called by the reconciler (`reconcile.py`). Per policy the operator keeps a Role
`laneway-config-<policy>` allowing get/list/watch on the one ConfigMap `laneway-<policy>`
(`resourceNames`), and a RoleBinding of that Role to the ServiceAccounts of the pods that carry
`routing.laneway.dev/policy=<policy>` (found through the operator's pod index). Both are owned by
the policy. The sidecar lists with `fieldSelector=metadata.name=<name>`, which the API server
authorizes against `resourceNames`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from laneway_operator.configmaps import owned_metadata
from laneway_operator.kube import Kube, ensure_object, group_path
from laneway_operator.names import config_map_name, config_reader_name

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_VERSION = "v1"


def reader_role(policy: Mapping[str, Any]) -> dict[str, Any]:
    name = policy["metadata"]["name"]
    return {
        "apiVersion": f"{RBAC_GROUP}/{RBAC_VERSION}",
        "kind": "Role",
        "metadata": owned_metadata(policy, config_reader_name(name)),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [config_map_name(name)],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }


def reader_binding(policy: Mapping[str, Any], accounts: Iterable[str]) -> dict[str, Any]:
    meta = policy["metadata"]
    role = config_reader_name(meta["name"])
    return {
        "apiVersion": f"{RBAC_GROUP}/{RBAC_VERSION}",
        "kind": "RoleBinding",
        "metadata": owned_metadata(policy, role),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": role},
        "subjects": [
            {"kind": "ServiceAccount", "name": account, "namespace": meta["namespace"]}
            for account in sorted(set(accounts))
        ],
    }


async def ensure_config_access(
    kube: Kube, policy: Mapping[str, Any], accounts: Iterable[str]
) -> bool:
    """Keep the Role and RoleBinding as wanted; True when either was written."""
    namespace = policy["metadata"]["namespace"]
    roles = group_path(RBAC_GROUP, RBAC_VERSION, "roles", namespace)
    bindings = group_path(RBAC_GROUP, RBAC_VERSION, "rolebindings", namespace)
    role = await ensure_object(kube, roles, reader_role(policy), ("rules",))
    binding = await ensure_object(kube, bindings, reader_binding(policy, accounts), ("subjects",))
    return role != "unchanged" or binding != "unchanged"
