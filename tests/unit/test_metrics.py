"""Per-request metric updates are cheap and always visible on the next scrape."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from router_sidecar import metrics as m


def _samples(metrics: m.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_noted_counts_and_observations_show_on_the_next_scrape() -> None:
    metrics = m.Metrics()
    for _ in range(3):
        metrics.count(metrics.requests, ("p", "fast", "mini", "ok"))
    metrics.count(metrics.tokens, ("mini", "input"), 40)
    metrics.observe(metrics.request_duration, ("p", "fast"), 0.3)
    metrics.observe(metrics.router_overhead, (), 0.0004)
    samples = _samples(metrics)
    labels = (("lane", "mini"), ("outcome", "ok"), ("policy", "p"), ("route", "fast"))
    assert samples[("laneway_requests_total", labels)] == 3
    assert samples[("laneway_tokens_total", (("direction", "input"), ("lane", "mini")))] == 40
    duration = (("le", "0.5"), ("policy", "p"), ("route", "fast"))
    assert samples[("laneway_request_duration_seconds_bucket", duration)] == 1
    assert samples[("laneway_router_overhead_seconds_count", ())] == 1


def test_counts_noted_between_scrapes_are_added_once() -> None:
    metrics = m.Metrics()
    key = ("laneway_requests_total", (("lane", "l"), ("outcome", "ok"), ("policy", "p"),
                                      ("route", "r")))
    metrics.count(metrics.requests, ("p", "r", "l", "ok"), 2)
    assert _samples(metrics)[key] == 2
    assert _samples(metrics)[key] == 2  # a second scrape adds nothing new
    metrics.count(metrics.requests, ("p", "r", "l", "ok"))
    assert _samples(metrics)[key] == 3
