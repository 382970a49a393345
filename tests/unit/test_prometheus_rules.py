"""The chart's Prometheus rules, checked and unit-tested by the real `promtool`.

`promtool` is built from the Prometheus Go module by `tests/controlplane/build.sh`, like the
control plane's binaries. `prometheus/laneway.rules.test.yaml` feeds series shaped like the
sidecar's metrics through every recording rule and alert and states what each must give: the
ratios behind the evidence a team reads (success, cost per success, escalation and correction
rates, latency percentiles), and when each alert fires, with its rendered summary.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.controlplane.plane import binaries_dir
from tests.unit.test_chart_files import RULES_FILE

TESTS_FILE = Path(__file__).parent / "prometheus" / "laneway.rules.test.yaml"


@pytest.fixture(scope="module")
def promtool() -> Path:
    return binaries_dir() / "promtool"


def run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=TESTS_FILE.parent)


def rule_names() -> set[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {r.get("record") or r["alert"] for g in groups for r in g["rules"]}


def test_the_rule_file_is_valid_promql_for_prometheus(promtool: Path) -> None:
    proc = run(promtool, "check", "rules", str(RULES_FILE))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rule_names())} rules found" in proc.stdout


def test_every_recording_rule_and_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load(TESTS_FILE.read_text())["tests"]
    tested = {case["expr"] for group in tests for case in group.get("promql_expr_test", [])}
    tested |= {case["alertname"] for group in tests for case in group.get("alert_rule_test", [])}

    assert sorted(rule_names() - tested) == []


def test_the_rules_give_what_their_unit_tests_expect(promtool: Path) -> None:
    proc = run(promtool, "test", "rules", TESTS_FILE.name)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
