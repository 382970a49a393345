"""The Helm chart, checked offline with the real `helm` binary.

`helm lint` and `helm template` for every values scenario in `chart-values/`, the operator and
webhook contract in the rendered objects, least-privilege RBAC, the 63-character name limit, the
values schema's error messages, the CRD copies, and the observability bundle (rules, dashboard,
docs) against the sidecar's real metric names. The same chart against a real API server is in
`tests/integration/test_helm.py`.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from prometheus_client.metrics import MetricWrapperBase

from router_sidecar.metrics import Metrics
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


@pytest.fixture(scope="session")
def render(
    helm: Helm,
) -> Render:
    """`helm template` a scenario (plus --set pairs) into a list of objects, cached per input."""
    cache: dict[tuple[str, str, tuple[str, ...]], list[dict[str, Any]]] = {}

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


# -- lint and render ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_passes_helm_lint_strictly(helm: Helm, scenario: str) -> None:
    proc = helm("lint", str(CHART), "--strict", "-f", str(SCENARIO_DIR / f"{scenario}.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_object_has_a_known_kind_and_the_required_fields(
    render: Render, scenario: str
) -> None:
    for obj in render(scenario):
        kind, meta = obj["kind"], obj["metadata"]
        assert obj["apiVersion"] == KNOWN_KINDS.get(kind), f"{kind} {meta.get('name')}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]), meta["name"]
        assert ("namespace" in meta) == (kind not in CLUSTER_SCOPED), f"{kind} {meta['name']}"
        if kind != "CustomResourceDefinition":
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm", meta["name"]
        if kind == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                assert {"name", "image", "resources", "securityContext"} <= container.keys()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_service_and_selector_points_at_the_operator_pods(
    render: Render, scenario: str
) -> None:
    objects = render(scenario)
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [o["spec"]["selector"] for o in objects if o["kind"] == "Service"]
    selectors += [
        o["spec"]["selector"]["matchLabels"]
        for o in objects
        if o["kind"] in ("PodDisruptionBudget", "ServiceMonitor", "Deployment")
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()


def test_defaults_render_the_operator_deployment_of_the_contract(
    render: Render,
) -> None:
    deploy = only(render(), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}

    assert deploy["spec"]["replicas"] == 2
    assert container["image"] == "laneway:0.1.0"
    assert container["args"] == OPERATOR_ARGS
    assert env["LANEWAY_SIDECAR_IMAGE"]["value"] == "laneway:0.1.0"
    assert env["LANEWAY_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["LANEWAY_PEERING_NAME"]["value"] == "laneway"
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "webhook": 9443}


def test_defaults_run_the_operator_unprivileged_on_a_read_only_filesystem(
    render: Render,
) -> None:
    pod = only(render(), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp", "/certs": "webhook-certs"}


def test_everything_on_passes_every_option_through(
    render: Render,
) -> None:
    objects = render("everything-on")
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert container["image"].endswith("/laneway@sha256:" + "0123456789abcdef" * 4)
    assert env["LANEWAY_SIDECAR_IMAGE"] == "registry.example.com/platform/laneway-sidecar:0.1.0"
    assert container["args"][:2] == ["--log-level", "DEBUG"]
    assert "--webhook-port" in container["args"] and "10443" in container["args"]
    assert pod["serviceAccountName"] == "laneway-operator"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    spread = pod["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert only(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert only(objects, "ServiceMonitor")["spec"]["endpoints"][0]["interval"] == "15s"
    assert only(objects, "ServiceMonitor")["metadata"]["labels"]["release"] == "prometheus"
    assert only(objects, "PodMonitor")["spec"]["namespaceSelector"] == {"any": True}
    assert only(objects, "ConfigMap")["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {"PrometheusRule", "Secret", "MutatingWebhookConfiguration"} <= kinds(objects)


def test_a_single_replica_gets_no_disruption_budget_and_keeps_custom_affinity(
    render: Render,
) -> None:
    objects = render("single-replica")
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]

    assert "PodDisruptionBudget" not in kinds(objects)
    assert list(pod["affinity"]) == ["nodeAffinity"]


def test_disabled_webhook_leaves_out_the_webhook_and_its_arguments(
    render: Render,
) -> None:
    objects = render("webhook-disabled")
    (container,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]

    assert not {"MutatingWebhookConfiguration", "Secret"} & kinds(objects)
    assert not [a for a in container["args"] if a.startswith("--webhook")]
    assert [v["name"] for v in container["volumeMounts"]] == ["tmp"]


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ((), ["routing.laneway.dev/policy: support-bot", "in every namespace"]),
        (
            ("webhook.enabled=false", "operator.watchNamespaces={team-a,team-b}"),
            ["The webhook is disabled", "in: team-a, team-b"],
        ),
    ],
)
def test_notes_tell_the_user_what_to_run_next(
    helm: Helm, sets: tuple[str, ...], expected: list[str]
) -> None:
    set_args = [arg for pair in sets for arg in ("--set", pair)]
    proc = helm("install", "laneway", str(CHART), "-n", NAMESPACE, "--dry-run=client", *set_args)
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]

    assert f"kubectl -n {NAMESPACE} rollout status deployment/laneway" in notes
    assert "kubectl apply -f examples/" in notes
    assert "kubectl get lane,rpol -A" in notes
    for text in expected:
        assert text in notes


# -- webhook -----------------------------------------------------------------------------------


def test_webhook_only_sees_labelled_pods_outside_system_namespaces(
    render: Render,
) -> None:
    objects = render()
    (hook,) = only(objects, "MutatingWebhookConfiguration")["webhooks"]
    service = only(objects, "Service", "laneway-webhook")

    assert hook["objectSelector"] == {
        "matchExpressions": [{"key": "routing.laneway.dev/policy", "operator": "Exists"}]
    }
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", NAMESPACE],
        }
    ]
    assert hook["clientConfig"]["service"] == {
        "name": "laneway-webhook", "namespace": NAMESPACE, "path": "/mutate-pods", "port": 443
    }  # fmt: skip
    assert hook["rules"][0]["operations"] == ["CREATE"]
    assert hook["rules"][0]["resources"] == ["pods"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 5
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["reinvocationPolicy"] == "Never"
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]


def test_extra_namespace_selection_is_added_to_the_built_in_exclusions(
    render: Render,
) -> None:
    (hook,) = only(render("everything-on"), "MutatingWebhookConfiguration")["webhooks"]
    selector = hook["namespaceSelector"]

    assert selector["matchLabels"] == {"laneway.dev/inject": "enabled"}
    assert [e["key"] for e in selector["matchExpressions"]] == [
        "kubernetes.io/metadata.name",
        "example.com/sandbox",
    ]
    assert hook["failurePolicy"] == "Ignore"


def test_generated_certificate_is_signed_by_the_ca_bundle_for_the_service_names(
    render: Render,
) -> None:
    objects = render()
    secret = only(objects, "Secret")
    (hook,) = only(objects, "MutatingWebhookConfiguration")["webhooks"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(hook["clientConfig"]["caBundle"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert secret["type"] == "kubernetes.io/tls"
    assert base64.b64decode(secret["data"]["ca.crt"]) == base64.b64decode(
        hook["clientConfig"]["caBundle"]
    )
    cert.verify_directly_issued_by(ca)
    assert set(sans.get_values_for_type(x509.DNSName)) >= {
        "laneway-webhook.laneway-system.svc",
        "laneway-webhook.laneway-system.svc.cluster.local",
    }


@pytest.mark.parametrize(
    ("scenario", "issuer"),
    [
        ("cert-manager", {"name": "laneway-selfsigned", "kind": "Issuer"}),
        ("cert-manager-cluster-issuer", {"name": "platform-ca", "kind": "ClusterIssuer"}),
    ],
)
def test_cert_manager_issues_the_certificate_and_injects_the_ca(
    render: Render, scenario: str, issuer: dict[str, str]
) -> None:
    objects = render(scenario)
    certificate = only(objects, "Certificate")
    webhook_config = only(objects, "MutatingWebhookConfiguration")

    assert "Secret" not in kinds(objects)
    assert ("Issuer" in kinds(objects)) == (issuer["kind"] == "Issuer")
    assert certificate["spec"]["issuerRef"] == {**issuer, "group": "cert-manager.io"}
    assert certificate["spec"]["secretName"] == "laneway-webhook-tls"
    assert "laneway-webhook.laneway-system.svc" in certificate["spec"]["dnsNames"]
    assert webhook_config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "laneway-system/laneway-webhook"
    }
    assert "caBundle" not in webhook_config["webhooks"][0]["clientConfig"]


# -- RBAC and peering --------------------------------------------------------------------------


def test_cluster_wide_rbac_grants_exactly_the_documented_rules(
    render: Render,
) -> None:
    objects = render()
    binding = only(objects, "ClusterRoleBinding")

    assert rule_table(only(objects, "ClusterRole")["rules"]) == CLUSTER_WIDE_RULES
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "laneway", "namespace": NAMESPACE}
    ]
    assert not {"Role", "RoleBinding"} & kinds(objects)


def test_watch_namespaces_moves_namespaced_rules_into_one_role_per_namespace(
    render: Render,
) -> None:
    objects = render("watch-namespaces")
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    peerings = [o for o in objects if o["kind"] == "KopfPeering"]
    (container,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]

    assert rule_table(only(objects, "ClusterRole")["rules"]) == NAMESPACED_MODE_CLUSTER_RULES
    assert set(roles) == {"team-a", "team-b"}
    for role in roles.values():
        assert rule_table(role["rules"]) == NAMESPACED_RULES
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert "ClusterKopfPeering" not in kinds(objects)
    assert container["args"][5:9] == ["--namespace", "team-a", "--namespace", "team-b"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_rule_grants_wildcards_escalation_secret_writes_or_workloads(
    render: Render, scenario: str
) -> None:
    for obj in render(scenario):
        if obj["kind"] not in ("ClusterRole", "Role"):
            continue
        table = rule_table(obj["rules"])
        assert not any("*" in verbs for verbs in table.values())
        assert not any({"escalate", "bind", "impersonate"} & verbs for verbs in table.values())
        assert table.get(("", "secrets"), set()) <= {"get", "list", "watch"}
        assert not [key for key in table if key[0] in ("apps", "batch", "*")]


def test_defaults_create_the_cluster_peering_object_the_operator_is_told_about(
    render: Render,
) -> None:
    objects = render()
    peering = only(objects, "ClusterKopfPeering")

    assert peering["metadata"]["name"] == "laneway"
    crds = {o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds


# -- names, values, schema ---------------------------------------------------------------------


def test_names_fit_in_63_characters_for_the_longest_release_name(
    render: Render,
) -> None:
    release = "a-release-name-that-is-exactly-fifty-three-chars-long"
    assert len(release) == 53  # Helm's own limit for release names

    for obj in render("everything-on", release=release):
        meta = obj["metadata"]
        if obj["kind"] != "CustomResourceDefinition":
            assert len(meta["name"]) <= 63, meta["name"]
        for value in meta.get("labels", {}).values():
            assert len(value) <= 63, value
    services = sorted(
        o["metadata"]["name"] for o in render(release=release) if o["kind"] == "Service"
    )
    assert [name.rsplit("-", 1)[1] for name in services] == ["metrics", "webhook"]
    assert all(name.startswith(release) and len(name) <= 63 for name in services), services


def test_pdb_min_available_at_or_above_replicas_fails_with_the_fix(
    helm: Helm,
) -> None:
    proc = helm(*template_args("defaults", "pdb.minAvailable=2"))

    assert proc.returncode != 0
    assert "pdb.minAvailable (2) must be lower than operator.replicas (2)" in proc.stderr


# A bad value (as --set, or --set-json for typed values) -> the line helm prints about it.
BAD_VALUES = [
    ("operator.replicas=two", "at '/operator/replicas': got string, want integer"),
    ("operator.replicas=0", "at '/operator/replicas': minimum: got 0, want 1"),
    (
        "operator.logLevel=LOUD",
        "at '/operator/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'",
    ),
    ("operator.replica=2", "at '/operator': additional properties 'replica' not allowed"),
    ("operator.watchNamespaces[0]=Team_A", "at '/operator/watchNamespaces/0': 'Team_A' does not"),
    (
        "webhook.failurePolicy=Sometimes",
        "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'",
    ),
    ("webhook.port=443", "at '/webhook/port': minimum: got 443, want 1,024"),
    ("webhook.timeoutSeconds=60", "at '/webhook/timeoutSeconds': maximum: got 60, want 30"),
    (
        "webhook.certManager.issuerRef.kind=Vault",
        "at '/webhook/certManager/issuerRef/kind': value must be one of 'Issuer', 'ClusterIssuer'",
    ),
    ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
    ("json:image.tag=1.5", "at '/image/tag': got number, want string"),
    ("image.digest=latest", "at '/image/digest': 'latest' does not match pattern"),
    ("metrics.serviceMonitor.interval=30", "at '/metrics/serviceMonitor/interval': got number"),
    ("grafana.dashbord.enabled=true", "at '/grafana': additional properties 'dashbord' not"),
    ("pdb.minAvailable=0", "at '/pdb/minAvailable': minimum: got 0, want 1"),
]


@pytest.mark.parametrize(("setting", "message"), BAD_VALUES)
def test_values_schema_rejects_bad_values_with_a_message_naming_the_field(
    helm: Helm, setting: str, message: str
) -> None:
    flag, pair = ("--set-json", setting[5:]) if setting.startswith("json:") else ("--set", setting)
    proc = helm(*template_args("defaults"), flag, pair)

    assert proc.returncode != 0, f"{setting} was accepted"
    assert "values don't meet the specifications of the schema(s)" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_values_yaml_and_the_schema_list_the_same_values_and_each_is_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    assert leaf_paths(values) == schema_paths(schema) - {"global"}
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, path in value_lines(lines):
        above = lines[number - 1].strip()
        assert above.startswith("#"), f"values.yaml line {number + 1} ({path}) has no prose"


def value_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(line index, dotted path) of every value in values.yaml that needs its own prose: keys that
    are not section headers and not inside a Kubernetes-typed value (whose keys are the API's)."""
    found = []
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        key = re.match(r"^(\s*)([A-Za-z]\w*):(\s.*)?$", line)
        if not key:
            continue
        indent = len(key[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [name for _, name in stack]
        stack.append((indent, key[2]))
        path = ".".join([*parents, key[2]])
        inside_open = any(is_open_object(".".join(parents[: i + 1])) for i in range(len(parents)))
        if not inside_open and not is_mapping_header(lines, number):
            found.append((number, path))
    return found


def leaf_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not is_open_object(path):
            paths |= leaf_paths(value, path + ".")
        else:
            paths.add(path)
    return paths


def schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("additionalProperties") is False and not is_open_object(path):
            paths |= schema_paths(sub, path + ".")
        else:
            paths.add(path)
    return paths


def is_open_object(path: str) -> bool:
    """Values holding Kubernetes types or free maps; documented as one value."""
    open_paths = ("resources", "SecurityContext", "securityContext", "namespaceSelector")
    return path.endswith(open_paths) or path.endswith("issuerRef")


def is_mapping_header(lines: list[str], number: int) -> bool:
    """A `key:` line with nothing after it whose next line is indented deeper (a section)."""
    line = lines[number]
    if line.rstrip().endswith(":") and number + 1 < len(lines):
        indent = len(line) - len(line.lstrip())
        following = lines[number + 1]
        return len(following) - len(following.lstrip()) > indent
    return False


# -- CRDs --------------------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_copies_of_the_top_level_crds() -> None:
    top = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}

    assert top, "crds/ is empty"
    stale = sorted(name for name in top if chart.get(name) != top[name])
    assert not stale, f"helm/laneway/crds/ is stale for {stale}: cp crds/*.yaml helm/laneway/crds/"
    assert set(chart) - set(top) == {"kopf-peerings.yaml"}


def test_kopf_peering_crds_keep_free_form_spec_and_status() -> None:
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf-peerings.yaml").read_text()))

    assert {(d["spec"]["names"]["kind"], d["spec"]["scope"]) for d in docs} == {
        ("ClusterKopfPeering", "Cluster"),
        ("KopfPeering", "Namespaced"),
    }
    for doc in docs:
        (version,) = doc["spec"]["versions"]
        props = version["schema"]["openAPIV3Schema"]["properties"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        for field in ("spec", "status"):
            assert props[field]["x-kubernetes-preserve-unknown-fields"] is True


# -- observability bundle ----------------------------------------------------------------------

RULES_FILE = CHART / "rules" / "laneway.rules.yaml"
DASHBOARD = CHART / "dashboards" / "laneway.json"
SCRAPE_LABELS = {"namespace", "pod", "le"}  # added by Prometheus, or the histogram bucket label


def sidecar_series() -> dict[str, set[str]]:
    """Every series name the sidecar exposes, with the label names it carries."""
    series: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        # prometheus_client keeps a metric's name, type and label names in these attributes.
        labels = set(metric._labelnames)
        name, kind = metric._name, metric._type
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        for suffix in suffixes.get(kind, [""]):
            series[name + suffix] = labels
    return series


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def all_rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def check_expr(expr: str, known: dict[str, set[str]]) -> list[str]:
    """Problems in one PromQL expression: unknown series, or labels those series do not carry."""
    problems = []
    for name in set(re.findall(r"\blaneway_[a-z_]+", expr)):
        if name not in known:
            problems.append(f"unknown series {name}")
    aggregations = re.findall(r"by \(([^)]*)\)\s*\((?:rate|increase)?\(?(laneway_[a-z_]+)", expr)
    for labels, name in aggregations:
        wanted = {label.strip() for label in labels.split(",")}
        extra = wanted - known.get(name, set()) - SCRAPE_LABELS
        if extra:
            problems.append(f"{name} has no label {sorted(extra)}")
    for name, matchers in re.findall(r"(laneway_[a-z_]+)\{([^}]*)\}", expr):
        used = set(re.findall(r"(\w+)\s*=~?", matchers))
        extra = used - known.get(name, set()) - SCRAPE_LABELS
        if extra:
            problems.append(f"{name} has no label {sorted(extra)}")
    return problems


def test_rules_and_dashboard_use_only_series_and_labels_the_sidecar_exposes() -> None:
    known = sidecar_series()
    problems = {e: check_expr(e, known) for e in all_rule_exprs() + dashboard_exprs()}

    assert {e: p for e, p in problems.items() if p} == {}


def test_dashboard_reads_only_recording_rules_that_exist() -> None:
    recorded = recorded_names()
    used = {name for e in dashboard_exprs() for name in re.findall(r"\blaneway:[a-z0-9_:]+", e)}

    assert used, "the dashboard reads no recording rule"
    assert used - recorded == set()


def test_rules_cover_the_evidence_the_issue_asks_for() -> None:
    recorded = recorded_names()
    exprs = "\n".join(all_rule_exprs())

    assert {
        "laneway:cost_usd_per_success:ratio_rate5m",
        "laneway:request_duration_seconds:p50_rate5m",
        "laneway:request_duration_seconds:p95_rate5m",
        "laneway:escalations_per_request:ratio_rate5m",
        "laneway:retries_per_request:ratio_rate5m",
        "laneway:feedback_corrected:ratio_rate1h",
        "laneway:request_success:ratio_rate5m",
    } <= recorded
    assert "histogram_quantile(0.95" in exprs
    assert 'laneway_feedback_total{outcome="corrected"}' in exprs
    assert "laneway_lane_state" in exprs and "laneway_config_stale" in exprs


def test_prometheus_rule_embeds_the_rule_file_unchanged(
    render: Render,
) -> None:
    rule = only(render("everything-on"), "PrometheusRule")

    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
    alert = next(r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r)
    assert "{{ $labels." in alert["annotations"]["summary"]


def test_dashboard_config_map_carries_the_dashboard_json(
    render: Render,
) -> None:
    config_map = only(render("everything-on"), "ConfigMap")

    assert json.loads(config_map["data"]["laneway.json"]) == json.loads(DASHBOARD.read_text())


def test_observability_doc_explains_every_rule_and_alert() -> None:
    doc = (REPO / "docs" / "observability.md").read_text()
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    names = [r.get("record") or r["alert"] for g in groups for r in g["rules"]]

    assert [n for n in names if f"`{n}`" not in doc] == []


def test_install_doc_explains_every_rbac_resource() -> None:
    doc = (REPO / "docs" / "install.md").read_text()
    resources = {resource for (_, resource) in CLUSTER_WIDE_RULES | NAMESPACED_MODE_CLUSTER_RULES}

    assert sorted(r for r in resources if f"`{r}`" not in doc) == []


# -- image and kind path -----------------------------------------------------------------------


def test_image_user_matches_the_charts_security_context() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, flags=re.MULTILINE)

    assert user == [(str(values["podSecurityContext"]["runAsUser"]),) * 2]
    assert 'ENTRYPOINT ["laneway"]' in dockerfile


def test_kind_e2e_script_parses_and_uses_the_pinned_kind_config() -> None:
    script = REPO / "scripts" / "kind-e2e.sh"
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)

    assert proc.returncode == 0, proc.stderr
    assert "--config kind-config.yaml" in script.read_text()
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    for node in config["nodes"]:
        assert re.fullmatch(r"kindest/node:v1\.37\.\d+@sha256:[0-9a-f]{64}", node["image"])
