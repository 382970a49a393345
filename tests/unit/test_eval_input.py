"""`laneway eval` refuses bad prompt files with exit code 2 and a message naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from laneway.cli import main
from laneway.evaluation.dataset import load_prompts

POLICY = str(Path(__file__).parent / "eval_data" / "policy.yaml")
GOOD = '{"id": "ok-1", "prompt": "Summarise this note."}\n'


def run_eval(prompts: Path, tmp_path: Path, *extra: str) -> int:
    out = tmp_path / "out"
    return main(
        ["eval", "-f", POLICY, "--policy", "evals", "--out", str(out), *extra, str(prompts)]
    )


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": "x"}', "line 3: missing 'prompt'"),
        ('{"prompt": "Hello"}', "line 3: missing 'id'"),
        ('{"id": "x", "prompt": "  "}', 'line 3: "prompt" must be a non-empty string'),
        ('{"id": "x", "prompt": "Hi",', "line 3: not valid JSON"),
        ('["x", "Hi"]', 'line 3: must be a JSON object with "id" and "prompt"'),
        ('{"id": "ok-1", "prompt": "Again"}', "line 3: id 'ok-1' is already used on line 1"),
        ('{"id": "x", "prompt": "Hi", "check": {"type": "fuzzy"}}', "line 3: check.type: must be"),
        (
            '{"id": "x", "prompt": "Hi", "check": {"type": "regex", "pattern": "("}}',
            "check.pattern",
        ),
        ('{"id": "x", "prompt": "Hi", "tier": "gold star"}', "line 3: x-laneway-tier: must be"),
    ],
)
def test_a_bad_line_exits_2_naming_the_file_and_line(tmp_path, capsys, bad_line, message):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(GOOD + "\n" + bad_line + "\n" + GOOD.replace("ok-1", "ok-2"))

    assert run_eval(prompts, tmp_path) == 2

    err = capsys.readouterr().err
    assert f"laneway eval: {prompts} " in err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_a_missing_prompt_file_exits_2(tmp_path, capsys):
    assert run_eval(tmp_path / "nope.jsonl", tmp_path) == 2
    assert "nope.jsonl: cannot read the prompt file" in capsys.readouterr().err


def test_an_empty_prompt_file_exits_2(tmp_path, capsys):
    prompts = tmp_path / "empty.jsonl"
    prompts.write_text("\n\n")
    assert run_eval(prompts, tmp_path) == 2
    assert "holds no prompts" in capsys.readouterr().err


def test_a_judge_lane_outside_the_policy_is_refused_before_any_call(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        GOOD + '{"id": "j", "prompt": "Hi", "check": {"type": "judge", "lane": "oracle"}}\n'
    )
    assert run_eval(prompts, tmp_path, "--live") == 2
    err = capsys.readouterr().err
    assert "line 2: check.lane 'oracle' is not a lane of the policy" in err


def test_limit_reads_only_the_first_prompts_and_ignores_the_rest(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(GOOD + GOOD.replace("ok-1", "ok-2") + "this line is never read\n")
    assert [p.id for p in load_prompts(str(prompts), limit=2)] == ["ok-1", "ok-2"]


def test_family_is_the_first_label_present(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"id": 1, "prompt": "a", "family": "F", "source_category": "S", "task": "T"}\n'
        '{"id": 2, "prompt": "b", "source_category": "S", "task": "T"}\n'
        '{"id": 3, "prompt": "c", "task": "T", "category": "C"}\n'
        '{"id": 4, "prompt": "d", "category": "C"}\n'
        '{"id": 5, "prompt": "e"}\n'
    )
    loaded = load_prompts(str(prompts))
    assert [p.family for p in loaded] == ["F", "S", "T", "C", "unlabelled"]
    assert loaded[0].id == "1"
    assert loaded[0].hints.task == "t"
