"""The command-line forms people script (SPEC "Outside a cluster"): each parses as written, with
the documented defaults, and a form that is wrong exits with 2."""

from __future__ import annotations

import pytest

from laneway.cli import build_parser


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_serve_defaults_to_loopback_port_4000_and_the_webhooks_secret_mounts() -> None:
    args = parse("serve", "--config", "config.json")
    assert (args.host, args.port) == ("127.0.0.1", 4000)
    assert args.secrets_dir == "/var/run/secrets/laneway"
    args = parse("serve", "--config", "c.json", "--host", "0.0.0.0", "--port", "4100",
                 "--secrets-dir", "/tmp/s")
    assert (args.host, args.port, args.secrets_dir) == ("0.0.0.0", 4100, "/tmp/s")


def test_compile_takes_several_paths_a_namespace_and_an_output_file() -> None:
    args = parse("compile", "-f", "lanes.yaml", "-f", "policies/", "--policy", "bot",
                 "-n", "team-a", "-o", "out.json")
    assert (args.files, args.policy, args.namespace, args.output) == (
        ["lanes.yaml", "policies/"], "bot", "team-a", "out.json")
    assert parse("compile", "-f", "x.yaml", "--policy", "bot").output is None  # stdout


def test_eval_writes_to_laneway_eval_by_default() -> None:
    args = parse("eval", "-f", "examples/", "--policy", "bot", "prompts.jsonl")
    assert (args.out, args.live, args.prompts) == ("laneway-eval", False, "prompts.jsonl")


def test_simulate_provider_defaults_to_loopback_and_the_openai_wire_format() -> None:
    args = parse("simulate-provider", "--port", "9000")
    assert (args.host, args.api, args.latency_ms) == ("127.0.0.1", "openai", 0)
    assert parse("simulate-provider", "--port", "9000", "--api", "anthropic").api == "anthropic"


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],  # --config is required
        ["compile", "--policy", "bot"],  # -f is required
        ["simulate-provider", "--port", "9000", "--api", "grpc"],
        ["explain", "-f", "x.yaml", "hi"],  # --policy is required
        ["route"],  # no such command
    ],
)
def test_a_form_that_is_wrong_exits_with_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err
