"""The benchmark harness' arithmetic and report: percentiles, per-round pairing, verdicts, tables.

No load is generated here; `make bench` itself exercises the processes. What these tests guard is
that the numbers `bench/README.md` quotes are computed the way it says: medians over interleaved
rounds, each round's proxy paired with the direct upstream measured in that same round.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import interpreter, loadgen, payloads, report, servers, stats
from router_sidecar.config import parse_config


def _round(**values: float | None) -> dict[str, float | None]:
    return dict(values)


# ---------------------------------------------------------------------------------------------
# Statistics.


def test_percentile_interpolates_between_ranks() -> None:
    samples = [4.0, 1.0, 3.0, 2.0]
    assert stats.percentile(samples, 0) == 1.0
    assert stats.percentile(samples, 100) == 4.0
    assert stats.percentile(samples, 50) == pytest.approx(2.5)
    assert stats.percentile(list(range(101)), 99) == pytest.approx(99.0)


def test_percentile_refuses_no_samples_and_out_of_range_ranks() -> None:
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = stats.summarise_latency([0.001] * 98 + [0.010, 0.020], errors=2)
    assert summary.count == 100
    assert summary.errors == 2
    assert summary.p50_ms == pytest.approx(1.0)
    assert summary.p99_ms == pytest.approx(10.1)


def test_differences_pair_each_round_with_the_same_rounds_baseline() -> None:
    direct = [_round(p=1.0), _round(p=5.0), _round(p=2.0)]
    proxy = [_round(p=1.3), _round(p=5.2), _round(p=2.9)]
    # Per round: 0.3, 0.2, 0.9. A median of the two medians (2.9 - 2.0) would say 0.9.
    assert stats.median_difference(proxy, direct, "p") == pytest.approx(0.3)


def test_rounds_without_a_value_are_left_out_of_medians_and_pairs() -> None:
    direct = [_round(p=1.0), _round(p=None), _round(p=1.0)]
    proxy = [_round(p=2.0), _round(p=9.0), _round(p=None)]
    assert stats.median_difference(proxy, direct, "p") == pytest.approx(1.0)
    assert stats.median_of(proxy, "p") == pytest.approx(5.5)
    assert stats.median_of([_round(p=None)], "p") is None


def test_ratios_skip_rounds_whose_baseline_is_zero() -> None:
    base = [_round(rps=100.0), _round(rps=0.0), _round(rps=200.0)]
    proxy = [_round(rps=20.0), _round(rps=5.0), _round(rps=30.0)]
    assert stats.median_ratio(proxy, base, "rps") == pytest.approx((0.2 + 0.15) / 2)


# ---------------------------------------------------------------------------------------------
# Summary, checks and the Markdown.


def _rounds() -> dict[str, list[dict[str, float | None]]]:
    def one(
        p50: float, p99: float, ttfc: float, rps: float, srps: float
    ) -> dict[str, float | None]:
        return _round(
            plain_p50_ms=p50,
            plain_p99_ms=p99,
            stream_ttfc_p50_ms=ttfc,
            plain_rps=rps,
            stream_rps=srps,
            plain_cpu=90.0,
            stream_cpu=95.0,
        )

    return {
        "direct": [one(0.2, 1.0, 0.2, 30_000, 25_000), one(0.3, 1.2, 0.3, 28_000, 24_000)],
        "nginx": [one(0.3, 1.5, 0.3, 16_000, 14_000), one(0.4, 1.6, 0.4, 15_000, 13_000)],
        "litellm": [one(20.0, 40.0, 18.0, 40, 20), one(22.0, 44.0, 19.0, 44, 22)],
        "laneway": [one(0.6, 2.0, 0.9, 3_200, 2_000), one(0.8, 2.4, 1.1, 3_000, 1_800)],
    }


def test_summary_reports_added_latency_against_direct_and_memory() -> None:
    summary = report.summarise(_rounds(), {"laneway": 45.0, "nginx": 14.0})
    lane = summary["laneway"]
    assert lane["added_p50_ms"] == pytest.approx(0.45)
    assert lane["added_p99_ms"] == pytest.approx(1.1)
    assert lane["added_ttfc_ms"] == pytest.approx(0.75)
    assert lane["plain_rps"] == pytest.approx(3_100)
    assert lane["rss_mb"] == 45.0
    assert summary["litellm"]["rss_mb"] is None


def test_throughput_ratios_compare_laneway_with_nginx_and_litellm() -> None:
    ratio = report.ratios(_rounds())
    assert ratio["laneway_vs_nginx_plain"] == pytest.approx((3_200 / 16_000 + 3_000 / 15_000) / 2)
    assert ratio["laneway_vs_litellm_stream"] == pytest.approx((100 + 1_800 / 22) / 2)


def test_checks_pass_and_fail_against_the_issue_targets() -> None:
    rounds = _rounds()
    summary = report.summarise(rounds, {"laneway": 45.0})
    verdicts = {
        c.name: c.verdict for c in report.checks_for_laneway(summary, report.ratios(rounds))
    }
    assert verdicts == {
        "added latency p50, 1 connection": "PASS",  # 0.45 <= 0.5
        "added latency p99, 1 connection": "PASS",  # 1.1 <= 2
        "non-streaming throughput vs nginx": "PASS",  # 20 % >= 15 %
        "streaming throughput vs nginx": "FAIL",  # (2000/14000 + 1800/13000) / 2 = 14.1 %
        "RSS after the run": "PASS",  # 45 < 80
        "time to first chunk added": "PASS",  # 0.75 < 1
    }


def test_limits_hold_at_equality_only_where_the_target_says_at_most() -> None:
    at_most = report.Check("p50", 0.5, 0.5, "ms", at_most=True)
    below = report.Check("rss", 80.0, 80.0, "MB", at_most=True, strict=True)
    at_least = report.Check("share", 0.15, 0.15, "x", at_most=False)
    missing = report.Check("ttfc", None, 1.0, "ms", at_most=True, strict=True)
    assert [c.verdict for c in (at_most, below, at_least, missing)] == [
        "PASS",
        "FAIL",
        "PASS",
        "NOT RUN",
    ]


def _result(**machine: str) -> dict[str, object]:
    rounds = _rounds()
    summary = report.summarise(rounds, {"laneway": 45.0, "nginx": 14.0, "litellm": 370.0})
    ratio = report.ratios(rounds)
    return {
        "date": "2026-01-02 03:04 UTC",
        "machine": {
            "nproc": 2,
            "cpu_model": "Test CPU",
            "load_start": "0.1",
            "load_end": "0.2",
            **machine,
        },
        "settings": {
            "rounds_done": 2,
            "wrk_seconds": 5,
            "connections": 16,
            "latency_requests": 1000,
            "upstream": "static",
            "mode": "full",
        },
        "rounds": rounds,
        "summary": summary,
        "ratios": ratio,
        "checks": report.checks_for_laneway(summary, ratio),
        "not_run": {},
        "notes": ["A note."],
    }


def test_markdown_has_a_row_per_target_the_ratios_and_every_verdict() -> None:
    text = report.render_markdown(_result())
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows]
    assert names[:5] == ["target", "---", "direct", "nginx", "LiteLLM"]
    assert "Laneway" in names
    assert "| Laneway / nginx | 20.0 % | 14.1 % |" in text
    assert "| Laneway / LiteLLM | 74.1× | 90.9× |" in text
    assert "| RSS after the run | 45.00 MB | < 80 MB | **PASS** |" in text
    # 90 % of a core at 3,200 and 3,000 req/s: 281 and 300 µs, median 291; streaming 95 % at
    # 2,000 and 1,800: 475 and 528 µs, median 501.
    assert "| Laneway | 291 µs | 501 µs |" in text
    assert text.count("**PASS**") == 5 and text.count("**FAIL**") == 1
    assert "Test CPU" in text and "A note." in text
    assert "Laneway and LiteLLM on" not in text
    named = report.render_markdown(_result(proxies_python="CPython 3.11.2 (/usr/bin/python3)"))
    assert "Laneway and LiteLLM on CPython 3.11.2 (/usr/bin/python3)." in named


def test_json_result_carries_the_verdicts() -> None:
    data = json.loads(json.dumps(report.to_json(_result())))
    assert data["checks"][0]["verdict"] == "PASS"
    assert data["summary"]["laneway"]["rss_mb"] == 45.0


def test_results_replace_only_the_marked_section_of_the_readme() -> None:
    readme = f"# Bench\nmethod\n{report.RESULTS_START}\nold table\n{report.RESULTS_END}\nafter\n"
    updated = report.replace_results(readme, "new table\n")
    assert (
        updated
        == f"# Bench\nmethod\n{report.RESULTS_START}\nnew table\n{report.RESULTS_END}\nafter\n"
    )
    appended = report.replace_results("# Bench\n", "table\n")
    assert appended.endswith(f"{report.RESULTS_START}\ntable\n{report.RESULTS_END}\n")


# ---------------------------------------------------------------------------------------------
# wrk output, fixed answers and generated configs.


def test_wrk_result_line_is_read_and_failed_responses_are_not_counted_as_throughput() -> None:
    output = "Running 5s test\nBENCH_RESULT 10000 5000000 0 50 1200 8800\n"
    result = loadgen.parse_wrk_result(output)
    assert result.rps == pytest.approx((10_000 - 50) / 5)
    assert result.p50_ms == pytest.approx(1.2)
    assert result.valid
    assert not loadgen.parse_wrk_result("BENCH_RESULT 100 1000000 2 0 1 2\n").valid
    with pytest.raises(loadgen.WrkError):
        loadgen.parse_wrk_result("wrk: connection refused\n")


def test_wrk_script_posts_the_same_body_every_target_gets() -> None:
    script = loadgen.lua_script(stream=True)
    assert 'wrk.method = "POST"' in script
    assert payloads.request_body(stream=True).decode() in script


def test_fixed_stream_is_valid_sse_that_spells_out_the_answer() -> None:
    frames = [f for f in payloads.stream_answer().split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == payloads.ANSWER_TEXT
    assert chunks[-1]["usage"]["completion_tokens"] == len(payloads.ANSWER_WORDS)
    assert json.loads(payloads.plain_answer())["choices"][0]["message"]["content"] == text


def test_fixed_nginx_bodies_are_quoted_and_refuse_variables() -> None:
    assert servers._nginx_quote("it's\n") == "'it\\'s\\n'"
    with pytest.raises(ValueError):
        servers._nginx_quote("costs $5")


def test_laneway_bench_config_is_a_valid_router_config_with_a_route_per_model() -> None:
    doc = servers.laneway_config("http://127.0.0.1:1/plain/v1", "http://127.0.0.1:1/stream/v1")
    config = parse_config(doc)
    assert set(config.routes) == {payloads.PLAIN_MODEL, payloads.STREAM_MODEL}
    lane = config.lanes[config.routes[payloads.STREAM_MODEL].lanes[0]]
    assert lane.provider.base_url == "http://127.0.0.1:1/stream/v1"


def test_litellm_bench_config_maps_both_model_names_and_disables_spend_tracking() -> None:
    doc = servers.litellm_config("http://u/plain/v1", "http://u/stream/v1")
    bases = {m["model_name"]: m["litellm_params"]["api_base"] for m in doc["model_list"]}
    assert bases == {
        payloads.PLAIN_MODEL: "http://u/plain/v1",
        "bench-stream": "http://u/stream/v1",
    }
    assert doc["general_settings"]["disable_spend_logs"] is True
    assert doc["litellm_settings"]["callbacks"] == []


# ---------------------------------------------------------------------------------------------
# bench/hotpath.py: its stages run the sidecar's own code.


def test_hotpath_times_every_stage_through_the_servers_own_request_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse
    import asyncio

    from bench import hotpath

    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    args = argparse.Namespace(only=None, profile=None, repeat=1, min_time=0.001, top=5)
    # `request, end to end` stops the run unless `server.chat_completions` answers 200, and
    # `stream request, end to end` unless the client side gets the whole stream.
    results = dict(asyncio.run(hotpath.run_all(args)))
    stages = ("decide", "record + Run", "engine.complete", "request, end to end")
    stages += ("stream translator", "engine.stream", "stream request, end to end")
    for stage in stages:
        assert results[stage] > 0, stage
    assert results["request, end to end"] > results["decide"]
    assert results["stream request, end to end"] > results["stream translator"]


# ---------------------------------------------------------------------------------------------
# The interpreter the Python proxies run on.


def _fake_python(tmp_path: Path, name: str, version: str, loop_s: float) -> str:
    """An executable that answers `interpreter`'s two probes as a CPython of `version` whose
    calibration loop takes `loop_s`."""
    path = tmp_path / name
    path.write_text(
        "#!/bin/sh\n"
        'case "$2" in *python_implementation*) echo "CPython True ' + version + '";;\n'
        f'  *) echo "{loop_s}";; esac\n'
    )
    path.chmod(0o755)
    return str(path)


def test_the_proxies_run_on_the_clearly_fastest_cpython_found(tmp_path: Path) -> None:
    fast = _fake_python(tmp_path, "fast", "3.11.2", 1e-9)
    missing = str(tmp_path / "missing")
    chosen = interpreter.choose(None, candidates=[missing, fast])
    assert (chosen.path, chosen.version, chosen.own) == (fast, "3.11.2", False)
    assert chosen.speed > 1000 and "3.11.2" in chosen.describe()


def test_an_interpreter_no_faster_than_the_benchmarks_own_is_not_chosen(tmp_path: Path) -> None:
    slow = _fake_python(tmp_path, "slow", "3.12.0", 60.0)
    chosen = interpreter.choose(None, candidates=[slow, sys.executable])
    assert (chosen.path, chosen.own) == (sys.executable, True)
    assert interpreter.laneway_python(chosen) == sys.executable


def test_an_old_or_other_python_is_skipped_and_refused_when_named(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text('#!/bin/sh\necho "PyPy True 3.11.0"\n')
    other.chmod(0o755)
    old = tmp_path / "old"
    old.write_text('#!/bin/sh\necho "CPython False 3.9.18"\n')
    old.chmod(0o755)
    assert interpreter.choose(None, candidates=[str(other), str(old)]).own
    with pytest.raises(SystemExit, match=r"not a CPython 3\.11 or newer"):
        interpreter.choose(str(old))
    named = interpreter.choose(_fake_python(tmp_path, "named", "3.13.0", 60.0))
    assert (named.version, named.own) == ("3.13.0", False)  # named: used even if slower
