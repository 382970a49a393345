"""The Helm chart's files checked against each other and the code they describe.

The values schema's error messages, `values.yaml` against the schema and its prose, the CRD
copies, the observability bundle (rules, dashboard, docs) against the sidecar's real metric
names, the image's user and the kind e2e path. Fixtures and helpers come from `chart_helpers.py`.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from router_sidecar.metrics import Metrics
from tests.unit.chart_helpers import (
    CHART,
    CLUSTER_WIDE_RULES,
    NAMESPACED_MODE_CLUSTER_RULES,
    REPO,
    Helm,
    Render,
    only,
    template_args,
)

# `helm` and `render` are fixtures: importing each under its own name registers it here.
from tests.unit.chart_helpers import helm as helm
from tests.unit.chart_helpers import render as render

# -- values and schema ------------------------------------------------------------------------

# A bad value (as --set, or --set-json for typed values) -> the line helm prints about it.
BAD_VALUES = [
    ("operator.replicas=two", "at '/operator/replicas': got string, want integer"),
    ("operator.replicas=0", "at '/operator/replicas': minimum: got 0, want 1"),
    (
        "operator.logLevel=LOUD",
        "at '/operator/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'",
    ),
    ("operator.replica=2", "at '/operator': additional properties 'replica' not allowed"),
    (
        "operator.laneHoldDownSeconds=-1",
        "at '/operator/laneHoldDownSeconds': minimum: got -1, want 0",
    ),
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
    (
        "egressProxy.httpsProxy=http://team:pw@proxy:3128",
        "at '/egressProxy/httpsProxy': 'http://team:pw@proxy:3128' does not match pattern",
    ),
    ("egressProxy.httpProxy=socks5://proxy:1080", "at '/egressProxy/httpProxy': 'socks5://"),
    (
        "egressProxy.credentialsSecret=Proxy_Creds",
        "at '/egressProxy/credentialsSecret': 'Proxy_Creds' does not match pattern",
    ),
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
