"""Status conditions of lanes and policies, as the Kubernetes API conventions describe them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from laneway_operator.reconcile import route_shifts
from laneway_operator.status import (
    compiled_policy_status,
    differs,
    failed_policy_status,
    find_condition,
    lane_status,
    set_condition,
)

T0, T1 = "2026-12-03T10:00:00Z", "2026-12-03T10:05:00Z"


def doc(**phases: str) -> dict[str, Any]:
    """A compiled config with routes fast (a, b) and strong (c), lanes in the given phases."""
    lanes = {name: {"phase": phases.get(name, "Healthy")} for name in ("a", "b", "c")}
    return {
        "version": "sha256:0123456789abcdef",
        "lanes": lanes,
        "routes": [{"name": "fast", "lanes": ["a", "b"]}, {"name": "strong", "lanes": ["c"]}],
    }


def test_last_transition_time_moves_only_when_the_status_flips():
    first = set_condition(None, type_="Ready", status="True", reason="A", message="m",
                          generation=1, now=T0)
    same = set_condition(first, type_="Ready", status="True", reason="B", message="n",
                         generation=2, now=T1)
    flipped = set_condition(same, type_="Ready", status="False", reason="C", message="o",
                            generation=2, now=T1)

    assert same[0]["lastTransitionTime"] == T0
    assert same[0]["reason"] == "B" and same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == T1


def test_conditions_are_keyed_by_type_and_keep_their_order():
    conds = set_condition(None, type_="Compiled", status="True", reason="X", message="",
                          generation=1, now=T0)
    conds = set_condition(conds, type_="Ready", status="True", reason="X", message="",
                          generation=1, now=T0)
    conds = set_condition(conds, type_="Compiled", status="False", reason="Y", message="",
                          generation=1, now=T1)

    assert [c["type"] for c in conds] == ["Compiled", "Ready"]
    assert find_condition(conds, "Compiled")["reason"] == "Y"


def test_a_compiled_policy_on_primary_lanes_is_ready_and_not_degraded():
    status = compiled_policy_status({}, doc=doc(), config_map="laneway-p", generation=3, now=T0)

    assert status["observedGeneration"] == 3
    assert status["configVersion"] == "sha256:0123456789abcdef"
    assert status["configMap"] == "laneway-p"
    assert status["routes"][0] == {"name": "fast", "activeLane": "a", "lanes": [
        {"name": "a", "phase": "Healthy"}, {"name": "b", "phase": "Healthy"}]}
    by_type = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert by_type == {"Compiled": ("True", "ConfigWritten"), "Ready": ("True", "RoutesServing"),
                       "Degraded": ("False", "PrimaryActive")}


def test_a_route_on_its_backup_lane_marks_the_policy_degraded_and_says_why():
    status = compiled_policy_status({}, doc=doc(a="Down"), config_map="laneway-p", generation=1,
                                    now=T0)

    degraded = find_condition(status["conditions"], "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "BackupActive")
    assert "fast -> b (primary a is Down)" in degraded["message"]
    assert find_condition(status["conditions"], "Ready")["status"] == "True"
    assert status["routes"][0]["activeLane"] == "b"


def test_a_route_with_every_lane_down_makes_the_policy_not_ready():
    status = compiled_policy_status({}, doc=doc(c="Down"), config_map="laneway-p", generation=1,
                                    now=T0)

    ready = find_condition(status["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoActiveLane")
    assert "strong" in ready["message"]
    assert status["routes"][1]["activeLane"] is None


def test_a_compile_error_keeps_the_last_good_config_and_says_so():
    good = compiled_policy_status({}, doc=doc(), config_map="laneway-p", generation=1, now=T0)

    failed = failed_policy_status(good, reason="LaneNotFound", message="lane x is missing",
                                  config_map="laneway-p", generation=2, now=T1)

    compiled = find_condition(failed["conditions"], "Compiled")
    assert (compiled["status"], compiled["reason"], compiled["message"]) == (
        "False", "LaneNotFound", "lane x is missing")
    assert compiled["lastTransitionTime"] == T1 and compiled["observedGeneration"] == 2
    ready = find_condition(failed["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "CompileFailed")
    assert "sha256:0123456789abcdef" in ready["message"]
    assert failed["configVersion"] == good["configVersion"]
    assert failed["routes"] == good["routes"]


def test_a_policy_that_never_compiled_says_pods_wait_for_the_configmap():
    failed = failed_policy_status({}, reason="EscalationCycle", message="cycle",
                                  config_map="laneway-p", generation=1, now=T0)

    assert "configVersion" not in failed
    assert "wait for ConfigMap laneway-p" in find_condition(failed["conditions"], "Ready")[
        "message"]


def test_lane_conditions_follow_the_phase():
    cases = {
        "Healthy": ("True", "True"),
        "Degraded": ("True", "False"),
        "Down": ("False", "False"),
        "Unknown": ("Unknown", "Unknown"),
    }
    for phase, (ready, healthy) in cases.items():
        status = lane_status({}, phase=phase, reason="R", message="m", last_probe=None,
                             generation=4, now=T0)
        by_type = {c["type"]: c["status"] for c in status["conditions"]}
        assert by_type == {"Ready": ready, "Healthy": healthy}, phase
        assert status["phase"] == phase and status["observedGeneration"] == 4


def test_rewriting_the_same_observation_changes_nothing():
    first = compiled_policy_status({}, doc=doc(), config_map="laneway-p", generation=1, now=T0)
    again = compiled_policy_status(first, doc=doc(), config_map="laneway-p", generation=1, now=T1)

    assert not differs(first, again)
    assert differs(first, compiled_policy_status(first, doc=doc(a="Down"),
                                                 config_map="laneway-p", generation=1, now=T1))


def routes(active: str | None, *phases: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"name": "fast", "activeLane": active,
             "lanes": [{"name": n, "phase": p} for n, p in phases]}]


def test_a_route_moving_to_its_backup_is_reported_with_the_lane_that_is_down():
    before = routes("a", ("a", "Healthy"), ("b", "Healthy"))
    after = routes("b", ("a", "Down"), ("b", "Healthy"))

    assert route_shifts(before, after) == [
        ("RouteShifted", "fast", "route fast: moved from a to b (a Down)")]


def test_a_route_back_on_its_primary_is_a_restore_and_no_lane_at_all_is_unavailable():
    down = routes("b", ("a", "Down"), ("b", "Healthy"))

    assert route_shifts(down, routes("a", ("a", "Healthy"), ("b", "Healthy")))[0][0] == (
        "RouteRestored")
    assert route_shifts(down, routes(None, ("a", "Down"), ("b", "Down")))[0][0] == (
        "RouteUnavailable")


def test_nothing_moved_when_the_policy_is_new_or_its_routes_keep_their_lanes():
    same = routes("a", ("a", "Healthy"))

    assert route_shifts(None, same) == []
    assert route_shifts(same, routes("a", ("a", "Degraded"))) == []


def test_lane_status_records_the_runs_that_drive_the_thresholds():
    status = lane_status({}, phase="Degraded", reason="ProbeFailing", message="m",
                         last_probe={"time": T0, "result": "Timeout", "message": "slow"},
                         generation=1, now=T0, runs=(0, 2))

    assert (status["consecutiveSuccesses"], status["consecutiveFailures"]) == (0, 2)
    assert status["lastProbe"]["result"] == "Timeout"


CRDS = Path(__file__).resolve().parents[2] / "crds"


def undeclared(value: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    """Paths in `value` that the structural `schema` does not declare: the API server would
    drop them from what the operator writes."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return [p for key, sub in value.items()
                for p in ([f"{path}.{key}"] if key not in props
                          else undeclared(sub, props[key], f"{path}.{key}"))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value)
                for p in undeclared(item, schema.get("items", {}), f"{path}[{i}]")]
    return []


def status_schema(crd_file: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / crd_file).read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["status"]


def test_every_status_field_the_operator_writes_is_declared_in_its_crd():
    probe = {"time": T0, "result": "Succeeded", "message": "ok", "latencyMs": 12}
    lane = lane_status({}, phase="Down", reason="ProbeFailing", message="m", last_probe=probe,
                       generation=1, now=T0, runs=(1, 0))
    good = compiled_policy_status({}, doc=doc(a="Down"), config_map="laneway-p", generation=2,
                                  now=T0)
    bad = failed_policy_status(good, reason="MissingLane", message="m", config_map="laneway-p",
                               generation=3, now=T1)

    assert undeclared(lane, status_schema("modellanes.yaml")) == []
    for status in (good, bad):
        assert undeclared(status, status_schema("routingpolicies.yaml")) == []
    assert undeclared({"made": {"up": 1}}, {"properties": {"made": {}}}) == ["status.made.up"]
