"""`laneway eval` offline: real labelled prompt files in, routes, report, CSV and chart out."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from laneway.cli import main
from laneway_operator.manifests import compile_files
from router_sidecar.config import RouterConfig, parse_config
from router_sidecar.decision import decide
from router_sidecar.signals import Hints, extract_signals

# The real labelled prompt sets (see SOURCES.md there); another copy can be named instead.
# The labelled prompt sets live in the workspace's shared/ folder, beside the repository clone.
_DEFAULT_EVAL_DIR = Path(__file__).resolve().parents[3] / "shared" / "eval"
EVAL_DIR = Path(os.environ.get("LANEWAY_EVAL_DATA", str(_DEFAULT_EVAL_DIR)))
DATA = Path(__file__).parent / "eval_data"
POLICY = str(DATA / "policy.yaml")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_eval(prompts: Path, out: Path, *extra: str, policy: str = POLICY) -> int:
    return main(
        ["eval", "-f", policy, "--policy", "evals", "--out", str(out), *extra, str(prompts)]
    )


def config(policy: str = POLICY) -> RouterConfig:
    return parse_config(compile_files([policy], "evals", None))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000


def test_a_whole_real_file_is_routed_exactly_as_the_sidecar_decides(tmp_path, capsys):
    prompts = EVAL_DIR / "mt_bench.jsonl"
    assert run_eval(prompts, tmp_path) == 0

    cfg = config()
    lines = [json.loads(line) for line in prompts.read_text(encoding="utf-8").splitlines()]
    rows = read_csv(tmp_path / "routes.csv")
    assert [row["id"] for row in rows] == [line["id"] for line in lines]
    for line, row in zip(lines, rows, strict=True):
        body = {"model": "auto", "messages": [{"role": "user", "content": line["prompt"]}]}
        decision = decide(cfg, extract_signals(body, Hints()), "auto")
        assert row["route"] == decision.route
        assert row["lane"] == decision.lanes[0]
        assert row["rule"] == (decision.rule or "")
        assert row["score"] == ("" if decision.score is None else str(decision.score))
        assert row["family"] == line["source_category"]

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["prompts"] == len(lines) == 80
    assert sum(sum(c.values()) for c in summary["families"].values()) == 80
    assert sum(summary["routes"].values()) == 80
    assert set(summary["families"]) == {line["source_category"] for line in lines}
    assert sum(summary["rules"].values()) == 80
    assert sum(summary["scores"].values()) == summary["rules"]["(complexity score)"]

    report = (tmp_path / "report.md").read_text()
    assert "# Laneway eval: policy evals/evals" in report
    assert "## Routes per task family" in report and "| writing | 10 |" in report
    assert_png(tmp_path / "routing.png")
    out = capsys.readouterr().out
    assert "80 prompts in 8 families" in out
    assert f"report: {tmp_path}/report.md" in out


def test_function_calling_prompts_carry_their_candidate_tools_and_take_the_tools_rule(tmp_path):
    lines = (EVAL_DIR / "bfcl_v4_sample.jsonl").read_text(encoding="utf-8").splitlines()
    offered = [line for line in lines if json.loads(line)["meta"].get("functions")][:20]
    without = [line for line in lines if not json.loads(line)["meta"].get("functions")][:20]
    prompts = tmp_path / "bfcl-subset.jsonl"
    prompts.write_text("\n".join(offered + without) + "\n", encoding="utf-8")
    assert run_eval(prompts, tmp_path / "out") == 0

    cfg = config()
    rows = {row["id"]: row for row in read_csv(tmp_path / "out" / "routes.csv")}
    for line in map(json.loads, offered):
        row = rows[line["id"]]
        assert (row["route"], row["rule"]) == ("premium", "tools-or-high-stakes")
        assert "hasTools" in row["reason"]
    for line in map(json.loads, without):
        body = {"messages": [{"role": "user", "content": line["prompt"]}]}
        assert rows[line["id"]]["route"] == decide(cfg, extract_signals(body, Hints())).route


def test_labels_with_a_few_values_are_broken_down_by_route(tmp_path):
    prompts = EVAL_DIR / "math500.jsonl"
    assert run_eval(prompts, tmp_path, "--limit", "120") == 0

    summary = json.loads((tmp_path / "summary.json").read_text())
    levels = summary["labels"]["meta.level"]
    assert set(levels) <= {"1", "2", "3", "4", "5"}
    assert sum(sum(routes.values()) for routes in levels.values()) == 120
    # Ids and paths have a distinct value per prompt: not a label worth a table.
    assert "meta.unique_id" not in summary["labels"]
    assert "### meta.level" in (tmp_path / "report.md").read_text()


def test_the_estimate_compares_routing_with_everything_on_the_dearest_route(tmp_path):
    assert run_eval(EVAL_DIR / "vicuna_bench.jsonl", tmp_path) == 0

    cost = json.loads((tmp_path / "summary.json").read_text())["estimatedCost"]
    assert cost["baselineRoute"] == "premium"
    assert cost["baseline"] == max(cost["perRoute"].values())
    assert 0 < cost["routed"] < cost["baseline"]
    assert cost["saving"] == pytest.approx(1 - cost["routed"] / cost["baseline"])
    rows = read_csv(tmp_path / "routes.csv")
    assert cost["routed"] == pytest.approx(sum(float(r["estimated_cost_usd"]) for r in rows))


def test_hint_labels_route_like_request_headers(tmp_path):
    prompts = tmp_path / "hinted.jsonl"
    prompts.write_text(
        '{"id": "1", "prompt": "Rename these columns.", "task": "Reasoning", "tier": "free"}\n'
        '{"id": "2", "prompt": "Rename these columns.", "tier": "free"}\n'
    )
    assert run_eval(prompts, tmp_path / "out") == 0

    rows = {row["id"]: row for row in read_csv(tmp_path / "out" / "routes.csv")}
    assert (rows["1"]["route"], rows["1"]["rule"]) == ("strong", "declared-reasoning")
    assert rows["2"]["route"] == "fast"
    # Without source_category, a declared task names the family.
    assert (rows["1"]["family"], rows["2"]["family"]) == ("Reasoning", "unlabelled")


def test_observe_mode_reports_what_enforce_would_route(tmp_path):
    policy = tmp_path / "observe.yaml"
    policy.write_text(Path(POLICY).read_text().replace("mode: enforce", "mode: observe"))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "1", "prompt": "Why does my python script fail?"}\n')
    assert run_eval(prompts, tmp_path / "out", policy=str(policy)) == 0

    row = read_csv(tmp_path / "out" / "routes.csv")[0]
    assert (row["route"], row["rule"]) == ("strong", "technical-or-long")
    assert "what `enforce` would choose" in (tmp_path / "out" / "report.md").read_text()


def test_long_runs_report_progress_on_stderr(tmp_path, capsys):
    assert run_eval(EVAL_DIR / "routellm_gsm8k.jsonl", tmp_path, "--limit", "600") == 0

    err = capsys.readouterr().err
    assert "laneway eval: routed 60/600 (10%)" in err
    assert "laneway eval: routed 600/600 (100%)" in err
