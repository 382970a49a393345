"""`laneway compile` as CI scripts call it: exit codes, stdout or -o FILE, messages on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from laneway.cli import main
from router_sidecar.config import load_config_file, load_config_text

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden" / "support-bot.json"


def test_compile_prints_the_config_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compile", "-f", str(EXAMPLES), "--policy", "support-bot", "-n", "team-a"])
    out = capsys.readouterr().out
    assert code == 0
    assert out == GOLDEN.read_text()
    assert load_config_text(out).policy_name == "support-bot"


def test_compile_writes_the_config_to_the_output_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "router.json"
    code = main(["compile", "-f", str(EXAMPLES), "--policy", "docs-assistant", "-o", str(target)])
    assert code == 0
    assert capsys.readouterr().out == ""
    config = load_config_file(str(target))
    assert (config.policy_namespace, config.mode) == ("team-a", "observe")


def test_several_f_flags_combine_their_files(capsys: pytest.CaptureFixture[str]) -> None:
    files = [
        "-f",
        str(EXAMPLES / "10-lanes.yaml"),
        "-f",
        str(EXAMPLES / "20-policy-support-bot.yaml"),
    ]
    assert main(["compile", *files, "--policy", "support-bot"]) == 0
    assert capsys.readouterr().out == GOLDEN.read_text()


def test_compiling_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    for target in (first, second):
        assert (
            main(["compile", "-f", str(EXAMPLES), "--policy", "support-bot", "-o", str(target)])
            == 0
        )
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-f", "no/such/dir", "--policy", "p"], "no/such/dir: no such file or folder"),
        (["-f", str(EXAMPLES), "--policy", "nope"], "found: team-a/support-bot"),
        (
            ["-f", str(EXAMPLES / "20-policy-support-bot.yaml"), "--policy", "support-bot"],
            "20-policy-support-bot.yaml: RoutingPolicy team-a/support-bot: "
            "spec.routes[0].lanes[0]: ModelLane 'fast-mini' does not exist in namespace team-a",
        ),
        (
            ["-f", str(EXAMPLES), "--policy", "support-bot", "-o", "/no/such/dir/out.json"],
            "/no/such/dir/out.json: cannot write the config",
        ),
    ],
)
def test_bad_input_exits_with_2_and_a_message_naming_file_field_and_fix(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compile", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("laneway compile: ")
    assert fragment in captured.err


def test_a_semantic_error_in_a_policy_file_is_exit_2_with_field_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (EXAMPLES / "20-policy-support-bot.yaml").read_text()
    cyclic = text.replace(
        "      - {from: strong, to: premium}",
        "      - {from: strong, to: premium}\n      - {from: premium, to: fast}",
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(cyclic)
    code = main(
        [
            "compile",
            "-f",
            str(EXAMPLES / "10-lanes.yaml"),
            "-f",
            str(policy),
            "--policy",
            "support-bot",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"{policy}: RoutingPolicy team-a/support-bot: spec.escalation.path:" in err
    assert "cycle (fast -> strong -> premium -> fast)" in err


def test_the_installed_command_runs_with_the_documented_form(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "laneway",
            "compile",
            "-f",
            str(EXAMPLES),
            "--policy",
            "support-bot",
            "-n",
            "team-a",
            "-o",
            str(target),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(target.read_text())["version"].startswith("sha256:")
    proc = subprocess.run(
        [sys.executable, "-m", "laneway", "compile", "-f", str(EXAMPLES), "--policy", "x"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no RoutingPolicy named 'x'" in proc.stderr
