"""Shared pieces of the Helm chart tests (`test_chart_render.py`, `test_chart_rbac_webhook.py`,
`test_chart_files.py`): the chart's paths and values scenarios, the rule tables the RBAC is
checked against, the `helm` and `render` fixtures (which run the real `helm` binary offline) and
small helpers to pick objects out of a render. A plain module, not a conftest: only the chart
tests import it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.plane import binaries_dir

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "laneway"
SCENARIO_DIR = Path(__file__).parent / "chart-values"
SCENARIOS = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
NAMESPACE = "laneway-system"
KUBE_VERSION = "1.37.2"

# kind -> apiVersion of everything the chart may render (CRDs included with --include-crds).
KNOWN_KINDS = {
    "CustomResourceDefinition": "apiextensions.k8s.io/v1",
    "ServiceAccount": "v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "MutatingWebhookConfiguration": "admissionregistration.k8s.io/v1",
    "PodDisruptionBudget": "policy/v1",
    "ClusterKopfPeering": "kopf.dev/v1",
    "KopfPeering": "kopf.dev/v1",
    "Issuer": "cert-manager.io/v1",
    "Certificate": "cert-manager.io/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
CLUSTER_SCOPED = {
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ClusterKopfPeering",
}

Helm = Callable[..., subprocess.CompletedProcess[str]]
Render = Callable[..., list[dict[str, Any]]]
READ = {"get", "list", "watch"}
READ_WRITE = READ | {"create", "update", "patch", "delete"}

# What the operator may do in each namespace it watches (docs/install.md explains each rule).
NAMESPACED_RULES = {
    ("routing.laneway.dev", "modellanes"): {"get", "list", "watch", "patch", "update"},
    ("routing.laneway.dev", "routingpolicies"): {"get", "list", "watch", "patch", "update"},
    ("routing.laneway.dev", "modellanes/status"): {"get", "patch", "update"},
    ("routing.laneway.dev", "routingpolicies/status"): {"get", "patch", "update"},
    ("routing.laneway.dev", "modellanes/finalizers"): {"update"},
    ("routing.laneway.dev", "routingpolicies/finalizers"): {"update"},
    ("", "configmaps"): READ_WRITE,
    ("", "secrets"): READ,
    ("", "pods"): READ,
    ("rbac.authorization.k8s.io", "roles"): READ_WRITE,
    ("rbac.authorization.k8s.io", "rolebindings"): READ_WRITE,
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
}
DISCOVERY_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): READ}
CLUSTER_WIDE_RULES = {
    **NAMESPACED_RULES,
    **DISCOVERY_RULES,
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
}
# With operator.watchNamespaces, kopf also lists and watches namespaces (cluster-wide it does not).
NAMESPACED_MODE_CLUSTER_RULES = {**DISCOVERY_RULES, ("", "namespaces"): {"list", "watch"}}

OPERATOR_ARGS = [
    "--log-level", "INFO", "operator", "--metrics-port", "8080", "--webhook-port", "9443",
    "--webhook-cert", "/certs/tls.crt", "--webhook-key", "/certs/tls.key",
]  # fmt: skip


# -- running helm ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Run the real helm (built by tests/controlplane/build.sh) with its state in a temp dir."""
    binary = binaries_dir() / "helm"
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-cluster"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary), *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )

    return run


_RENDERED: dict[tuple[str, str, tuple[str, ...]], list[dict[str, Any]]] = {}


@pytest.fixture(scope="session")
def render(
    helm: Helm,
) -> Render:
    """`helm template` a scenario (plus --set pairs) into a list of objects, cached per input.

    Each chart test module registers its own copy of this fixture, so the cache is the module's
    `_RENDERED`, shared by all of them: a scenario is rendered once per session."""
    cache = _RENDERED

    def run(
        scenario: str = "defaults", *sets: str, release: str = "laneway"
    ) -> list[dict[str, Any]]:
        key = (scenario, release, sets)
        if key not in cache:
            proc = helm(*template_args(scenario, *sets, release=release))
            assert proc.returncode == 0, proc.stderr
            cache[key] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return cache[key]

    return run


def template_args(scenario: str, *sets: str, release: str = "laneway") -> list[str]:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    args += ["--kube-version", KUBE_VERSION, "-f", str(SCENARIO_DIR / f"{scenario}.yaml")]
    for pair in sets:
        args += ["--set", pair]
    return args


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objects}


def rule_table(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    table: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table
