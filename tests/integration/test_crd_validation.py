"""The CRDs on a real API server: what `kubectl apply` rejects, defaults, columns, explain.

Each file in `invalid/` is one bad manifest; its `# expect:` line is the text the user must see
in kubectl's error. Because the API server applies the CRD defaults, these tests also check that
the offline compiler (which applies the same defaults itself) gives the same config for the
files as for the objects the server stored.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from laneway_operator.compiler import compile_policy, render_config
from laneway_operator.manifests import load_manifests, select_policy
from tests.controlplane.plane import ControlPlane

pytestmark = pytest.mark.controlplane

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
INVALID = sorted((HERE / "invalid").glob("*.yaml"))


def expected_message(path: Path) -> str:
    match = re.search(r"^# expect: (.+)$", path.read_text(), re.MULTILINE)
    assert match, f"{path.name} needs an '# expect: <message>' line"
    return match.group(1).strip()


def test_the_invalid_manifest_table_is_large_enough() -> None:
    assert len(INVALID) >= 20


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_the_api_server_rejects_each_invalid_manifest_with_a_message_saying_what_to_fix(
    controlplane: ControlPlane, crds: list[str], namespace: str, path: Path
) -> None:
    proc = controlplane.kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert proc.returncode != 0, f"{path.name} was accepted:\n{proc.stdout}"
    assert expected_message(path) in proc.stderr


def test_the_invalid_manifests_differ_from_a_valid_one_only_in_their_mistake(
    controlplane: ControlPlane, crds: list[str], namespace: str
) -> None:
    # Undo the mistake of two fixtures and the server accepts them: the fixtures test one rule.
    lane = yaml.safe_load((HERE / "invalid" / "lane-zero-duration.yaml").read_text())
    lane["spec"]["timeouts"]["firstToken"] = "10s"
    policy = yaml.safe_load((HERE / "invalid" / "policy-bands-overlap.yaml").read_text())
    policy["spec"]["complexity"]["bands"][1]["min"] = 3
    manifest = yaml.safe_dump_all([lane, policy])
    controlplane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)


def test_the_latency_condition_and_the_tool_call_fallback_are_stored_as_written(
    controlplane: ControlPlane, crds: list[str], namespace: str
) -> None:
    policy = yaml.safe_load((HERE / "invalid" / "policy-latency-condition-zero.yaml").read_text())
    policy["spec"]["triage"][0]["when"] = {"anyOf": [{"latencyBudgetMsUnder": 1500}]}
    policy["spec"]["fallback"]["triggers"] = ["timeout", "toolCallInvalid"]
    controlplane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(policy))

    spec = get_json(controlplane, namespace, "routingpolicy", "bad-policy")["spec"]
    assert spec["triage"][0]["when"] == {"anyOf": [{"latencyBudgetMsUnder": 1500}]}
    assert spec["fallback"]["triggers"] == ["timeout", "toolCallInvalid"]


def test_the_api_server_fills_in_the_documented_defaults(
    controlplane: ControlPlane, crds: list[str], namespace: str
) -> None:
    manifest = f"""
apiVersion: routing.laneway.dev/v1alpha1
kind: ModelLane
metadata: {{name: minimal, namespace: {namespace}}}
spec:
  provider: {{type: openai, baseURL: "http://127.0.0.1:8000/v1", model: local}}
  pricing: {{inputPerMillion: 0, outputPerMillion: 0}}
  limits: {{contextWindow: 8192, maxOutputTokens: 1024}}
---
apiVersion: routing.laneway.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: minimal, namespace: {namespace}}}
spec:
  selector: {{}}
  routes: [{{name: only, lanes: [minimal]}}]
  defaultRoute: only
"""
    controlplane.kubectl("apply", "-f", "-", input=manifest)
    lane = get_json(controlplane, namespace, "modellane", "minimal")
    policy = get_json(controlplane, namespace, "routingpolicy", "minimal")
    assert lane["spec"]["timeouts"] == {"connect": "5s", "firstToken": "30s", "total": "120s"}
    assert lane["spec"]["healthProbe"] == {
        "interval": "10s",
        "timeout": "3s",
        "failureThreshold": 3,
        "successThreshold": 2,
    }
    spec = policy["spec"]
    assert spec["mode"] == "enforce"
    assert spec["fallback"]["retries"] == {"max": 1, "backoff": "200ms"}
    assert spec["fallback"]["circuitBreaker"] == {"consecutiveFailures": 5, "cooldown": "30s"}
    assert spec["budget"] == {"onExceed": "skipLane"}

    # The offline compiler applies the same defaults: stored objects and files compile alike.
    offline = compile_policy(*select_policy(load_manifests_text(manifest), "minimal", namespace))
    stored = compile_policy(policy, {"minimal": lane})
    assert render_config(stored) == render_config(offline)


def test_examples_stored_by_the_server_compile_to_the_same_bytes_as_the_files(
    controlplane: ControlPlane, crds: list[str], namespace: str
) -> None:
    objects = apply_examples(controlplane, namespace)
    lanes = {
        item["metadata"]["name"]: item
        for item in get_json(controlplane, namespace, "modellanes")["items"]
    }
    policy = get_json(controlplane, namespace, "routingpolicy", "support-bot")
    from_files = compile_policy(*select_policy(objects, "support-bot", namespace))
    assert render_config(compile_policy(policy, lanes)) == render_config(from_files)


def test_printer_columns_show_lane_health_and_which_lane_serves_each_route(
    controlplane: ControlPlane, crds: list[str], namespace: str
) -> None:
    apply_examples(controlplane, namespace)
    controlplane.kubectl(
        "patch",
        "-n",
        namespace,
        "modellane",
        "fast-mini",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "phase": "Down",
                    "lastProbe": {
                        "time": "2026-01-01T00:00:00Z",
                        "latencyMs": 812,
                        "result": "Timeout",
                        "message": "no answer within 3s",
                    },
                }
            }
        ),
    )
    controlplane.kubectl(
        "patch",
        "-n",
        namespace,
        "routingpolicy",
        "support-bot",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "configVersion": "sha256:0123456789abcdef",
                    "activeLanesSummary": "fast=fast-mini-backup strong=strong-reasoning",
                    "conditions": [
                        {
                            "type": "Compiled",
                            "status": "True",
                            "reason": "ConfigWritten",
                            "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        },
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "RoutesServing",
                            "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        },
                        {
                            "type": "Degraded",
                            "status": "True",
                            "reason": "RouteOnBackup",
                            "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        },
                    ],
                }
            }
        ),
    )

    lanes = table(controlplane.kubectl("get", "lane", "-n", namespace).stdout)
    assert lanes[0][:5] == ["NAME", "PROVIDER", "MODEL", "PHASE", "LATENCY-MS"]
    assert ["fast-mini", "openai", "gpt-4.1-mini", "Down", "812"] in [row[:5] for row in lanes]
    wide = controlplane.kubectl("get", "lane", "fast-mini", "-n", namespace, "-o", "wide").stdout
    assert "https://api.openai.com/v1" in wide and "Timeout" in wide

    # Which lane serves each route, and whether any route runs on a backup, show at a glance.
    policies = table(controlplane.kubectl("get", "rpol", "-n", namespace).stdout)
    assert policies[0][:4] == ["NAME", "MODE", "READY", "VERSION"]
    assert policies[0][4:7] == ["ACTIVE-LANES", "DEGRADED", "AGE"]
    row = next(row for row in policies if row[0] == "support-bot")
    assert row[:4] == ["support-bot", "enforce", "True", "sha256:0123456789abcdef"]
    assert " ".join(row[4:6]) == "fast=fast-mini-backup strong=strong-reasoning"
    assert row[6] == "True"


def test_kubectl_explain_describes_the_fields(controlplane: ControlPlane, crds: list[str]) -> None:
    assert "Secret key holding the API key" in explain(controlplane, "modellane.spec.provider")
    assert "rateLimited (429)" in explain(controlplane, "routingpolicy.spec.fallback.triggers")


def test_a_status_update_cannot_change_the_spec(
    controlplane: ControlPlane, crds: list[str], namespace: str
) -> None:
    apply_examples(controlplane, namespace)
    controlplane.kubectl(
        "patch",
        "-n",
        namespace,
        "modellane",
        "fast-mini",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"provider": {"model": "other"}}, "status": {"phase": "Healthy"}}),
    )
    lane = get_json(controlplane, namespace, "modellane", "fast-mini")
    assert lane["spec"]["provider"]["model"] == "gpt-4.1-mini"
    assert lane["status"]["phase"] == "Healthy"


# ---------------------------------------------------------------------------------------------
# Helpers.


def explain(controlplane: ControlPlane, field: str) -> str:
    # The OpenAPI document of a new CRD is published shortly after it is Established.
    for _ in range(20):
        proc = controlplane.kubectl("explain", field, check=False)
        if proc.returncode == 0:
            return str(proc.stdout)
        time.sleep(0.5)
    raise AssertionError(f"kubectl explain {field} failed: {proc.stderr}")


def get_json(controlplane: ControlPlane, namespace: str, *what: str) -> dict[str, Any]:
    return json.loads(controlplane.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)


def apply_examples(controlplane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    """Apply every manifest in examples/ into `namespace`; return the objects as applied."""
    objects = [in_namespace(obj, namespace) for obj in load_manifests([str(REPO / "examples")])]
    controlplane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    return objects


def in_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(obj))
    copy["metadata"]["namespace"] = namespace
    return copy


def load_manifests_text(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]
