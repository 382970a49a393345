"""`laneway review`: production decision lines and their feedback in, per-route evidence out.

The first test feeds it the lines a real sidecar wrote for real requests (routes chosen by
triage, one escalation, feedback through `/v1/feedback`); the others state what each finding
needs, on lines written the same way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from laneway.cli import main
from laneway.review import Lines, read_lines, review
from tests.e2e.harness import lane, policy_doc, running

SIMS = {"fast": "openai", "strong": "openai"}


def _policy(sims: dict[str, Any]) -> dict[str, Any]:
    return policy_doc(
        {"fast": lane(sims["fast"].url, inp=0.1, out=0.4),
         "strong": lane(sims["strong"].url, inp=2, out=8)},
        {"fast": ["fast"], "strong": ["strong"]},
        default_route="fast",
        triage=[{"name": "technical", "when": {"keywordsAny": ["sql"]}, "route": "strong"}],
        escalation={"triggers": ["uncertain"], "uncertaintyMarkers": ["I'm not sure"],
                    "maxEscalations": 1, "toolFailureThreshold": 0, "path": {"fast": "strong"}},
    )


async def test_review_reads_what_a_sidecar_wrote_and_adds_up_each_route(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="laneway")
    summarize = {"x-laneway-task": "summarize"}
    async with running(SIMS, _policy) as (sidecar, sims):
        ids = []
        for _ in range(3):
            _, headers, _ = await sidecar.chat("Summarise this note", headers=summarize)
            ids.append(headers["x-laneway-decision-id"])
        await sidecar.chat("Why is this SQL slow?", headers={"x-laneway-task": "debug"})
        sims["fast"].set_mode("uncertain")
        _, escalated, _ = await sidecar.chat("Summarise this too", headers=summarize)
        for decision_id, outcome in zip(ids, ["corrected", "accepted", "accepted"], strict=True):
            status, _, _ = await sidecar.post(
                "/v1/feedback", {"decision_id": decision_id, "outcome": outcome})
            assert status == 200
    log = tmp_path / "router.log"
    log.write_text("".join(f"2026-12-04T10:00:00.000Z {r.getMessage()}\n" for r in caplog.records
                           if r.name in ("laneway.decisions", "laneway.feedback")))

    assert main(["review", "--json", "--sample", "1", str(log)]) == 0
    result = json.loads(capsys.readouterr().out)
    groups = {(g["route"], g["task"]): g for g in result["groups"]}
    assert set(groups) == {("fast", "summarize"), ("strong", "debug"), ("strong", "summarize")}
    fast = groups[("fast", "summarize")]
    assert (fast["requests"], fast["ok"], fast["feedback"], fast["corrected"]) == (3, 3, 3, 1)
    assert fast["costPerSuccessUsd"] > 0
    # The escalated request is served (and paid) on strong, but escalated away from fast.
    assert groups[("strong", "summarize")]["requests"] == 1
    assert (fast["started"], fast["escalated"]) == (4, 1)
    assert groups[("strong", "summarize")]["escalated"] == 0
    assert result["overall"]["requests"] == 5
    assert escalated["x-laneway-route"] == "strong"
    assert all(len(s["decisionIds"]) == 1 for s in result["samples"])
    assert result["skippedLines"] == 0

    assert main(["review", str(log), "--by", "task"]) == 0
    text = capsys.readouterr().out
    assert "| task | requests | success |" in text
    assert "| summarize | 4 | 100 % |" in text


def decision(i: int, route: str, task: str | None = None, *, cost: float = 0.001,
             outcome: str = "ok", escalated: bool = False, **extra: Any) -> str:
    line = {"decisionId": f"d{i}", "policy": "bot", "mode": "enforce", "route": route,
            "task": task, "outcome": outcome, "latencyMs": 100 + i, "costUsd": cost,
            "escalations": [{"from": "fast", "to": route, "reason": "uncertain"}] if escalated
            else [], "fallbacks": 0, **extra}
    return json.dumps(line)


def feedback(i: int, outcome: str) -> str:
    return json.dumps({"decisionId": f"d{i}", "feedback": outcome})


def lines_of(*texts: str) -> Lines:
    return read_lines(texts)


def test_a_task_family_corrected_far_more_often_than_the_rest_is_named() -> None:
    texts = [decision(i, "fast", "extract") for i in range(10)]
    texts += [feedback(i, "corrected" if i < 6 else "accepted") for i in range(10)]
    texts += [decision(i, "fast", "summarize") for i in range(10, 40)]
    texts += [feedback(i, "accepted") for i in range(10, 40)]
    result = review(lines_of(*texts))

    (finding,) = result.findings
    assert finding.startswith("route fast, task extract: 6 of 10 answers with feedback were "
                              "corrected (60 %, against 15 % overall)")
    # Too little feedback is no evidence: the same rate on 4 answers says nothing.
    assert review(lines_of(*texts[:4], *texts[10:14], *texts[20:])).findings == []


def test_a_route_that_escalates_often_and_one_that_fails_are_named() -> None:
    # 20 requests start on fast: half of them are escalated and served by strong.
    texts = [decision(i, "strong" if i % 2 == 0 else "fast", "debug", escalated=i % 2 == 0)
             for i in range(20)]
    texts += [decision(i, "premium", "agent", outcome="failed" if i < 45 else "ok")
              for i in range(20, 60)]
    findings = review(lines_of(*texts)).findings

    assert any(f.startswith("route fast, task debug: 10 of the 20 requests that started here "
                            "were escalated (50 %)") for f in findings)
    assert not any(f.startswith("route strong") for f in findings)
    assert any(f.startswith("route premium, task agent: 38 % of the requests the router was "
                            "responsible for were answered (25 failed") for f in findings)


def test_a_cheaper_route_corrected_no_more_often_is_a_candidate_to_move_down() -> None:
    texts = [decision(i, "fast", "summarize", cost=0.0002) for i in range(10)]
    texts += [decision(i, "strong", "summarize", cost=0.004) for i in range(10, 20)]
    texts += [feedback(i, "corrected" if i in (0, 10) else "accepted") for i in range(20)]
    findings = review(lines_of(*texts)).findings

    assert findings == [
        "task summarize: route fast costs $0.000200 per answer and is corrected 10 % of the "
        "time; route strong costs $0.004000 and is corrected 10 %. Its strong traffic is a "
        "candidate to move down a tier (try it in observe mode first)."
    ]


def test_observe_mode_lines_say_how_often_enforce_would_differ_and_at_what_cost() -> None:
    texts = [decision(i, "strong", None, cost=0.004, mode="observe",
                      enforce={"route": "fast" if i < 3 else "strong", "costUsd": 0.001})
             for i in range(4)]
    (finding,) = review(lines_of(*texts)).findings

    assert finding == (
        "observe mode: enforce would have chosen another route for 3 of 4 requests; serving "
        "each on enforce's first lane would have cost an estimated $0.004000 against $0.016000 "
        "spent (-75 %).")


def test_prefixes_are_ignored_the_last_feedback_wins_and_other_lines_are_counted() -> None:
    lines = read_lines([
        "2026-12-04T10:00:00.123456789Z " + decision(1, "fast"),
        "[pod/bot-1/laneway-router] " + feedback(1, "corrected"),
        feedback(1, "accepted"),
        "INFO laneway.server started",
        '{"not": "a decision"}',
        "{broken json",
        "",
    ])

    assert list(lines.decisions) == ["d1"]
    assert lines.feedback == {"d1": "accepted"}
    assert lines.skipped == 3


def test_review_without_decision_lines_or_with_an_unknown_group_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("INFO nothing here\n")

    assert main(["review", str(empty)]) == 2
    assert "no decision lines in " in capsys.readouterr().err
    assert main(["review", "--by", "route,colour", str(empty)]) == 2
    assert "use one or more of route, task" in capsys.readouterr().err
    assert main(["review", str(tmp_path / "missing.log")]) == 2
    assert "missing.log: cannot read it" in capsys.readouterr().err
