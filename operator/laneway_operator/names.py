"""Names the operator, the webhook and the sidecar agree on: resources, labels, object names.

Pure constants and name helpers, imported by every other operator module. The sidecar has its own
copy of nothing here: it learns its ConfigMap name from `--watch-configmap`, which the webhook
(`injection.py`) writes from `config_map_name`.
"""

from __future__ import annotations

GROUP = "routing.laneway.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
LANES = "modellanes"
POLICIES = "routingpolicies"
LANE_KIND = "ModelLane"
POLICY_KIND = "RoutingPolicy"

# Pods carrying this label get the sidecar; its value names the RoutingPolicy of their namespace.
POLICY_LABEL = f"{GROUP}/policy"
INJECTED_ANNOTATION = f"{GROUP}/injected"
CONFIG_VERSION_ANNOTATION = f"{GROUP}/config-version"
FINALIZER = f"{GROUP}/finalizer"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "laneway-operator"

CONFIG_KEY = "config.json"
SIDECAR_NAME = "laneway-router"
SIDECAR_PORT = 4000
CONFIG_MOUNT = "/etc/laneway/config"
SECRETS_DIR = "/var/run/secrets/laneway"
PEERING_NAME = "laneway"


def config_map_name(policy: str) -> str:
    """The ConfigMap that holds a policy's compiled router config."""
    return f"laneway-{policy}"


def config_reader_name(policy: str) -> str:
    """The Role and RoleBinding that let a policy's sidecars read (only) that ConfigMap."""
    return f"laneway-config-{policy}"
