"""The operator's Prometheus metrics and the small HTTP server that exposes them.

`main.py` starts `serve_metrics` on `--metrics-port` (`/metrics`, `/healthz`, `/readyz`); the
probe loops, the reconciler and the webhook record into one `OperatorMetrics`. Labels carry
namespaces and object names only, never secrets or prompt text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from router_sidecar.config import LANE_PHASES

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class OperatorMetrics:
    """Every metric the operator exports, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.probe_duration = Histogram(
            "laneway_operator_probe_duration_seconds",
            "Duration of provider health probes, failures included",
            ["namespace", "lane"],
            buckets=PROBE_BUCKETS,
            registry=r,
        )
        self.probes = Counter(
            "laneway_operator_probes_total",
            "Provider health probes by result (Succeeded, Timeout, ConnectionFailed, ...)",
            ["namespace", "lane", "result"],
            registry=r,
        )
        self.lane_phase = Gauge(
            "laneway_operator_lane_phase",
            "1 for the phase each ModelLane is in, 0 for the others",
            ["namespace", "lane", "phase"],
            registry=r,
        )
        self.reconciles = Counter(
            "laneway_operator_reconciles_total",
            "Reconciles by kind and result (ok, compile_error, name_taken, api_error)",
            ["kind", "result"],
            registry=r,
        )
        self.config_writes = Counter(
            "laneway_operator_config_writes_total",
            "ConfigMap writes of a new config version",
            ["namespace", "policy"],
            registry=r,
        )
        self.route_shifts = Counter(
            "laneway_operator_route_shifts_total",
            "Changes of a route's active lane",
            ["namespace", "policy", "route"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "laneway_operator_webhook_requests_total",
            "Admission reviews by result (injected, skipped, denied, error)",
            ["result"],
            registry=r,
        )

    def set_lane_phase(self, namespace: str, lane: str, phase: str) -> None:
        for candidate in LANE_PHASES:
            self.lane_phase.labels(namespace, lane, candidate).set(1 if candidate == phase else 0)

    def forget_lane(self, namespace: str, lane: str) -> None:
        """Drop a deleted lane's series so dashboards do not show it forever."""
        for candidate in LANE_PHASES:
            with contextlib.suppress(KeyError):
                self.lane_phase.remove(namespace, lane, candidate)
        with contextlib.suppress(KeyError):
            self.probe_duration.remove(namespace, lane)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(
    metrics: OperatorMetrics, *, host: str, port: int, ready: Callable[[], bool]
) -> web.AppRunner:
    """Start `/metrics`, `/healthz` (the process serves) and `/readyz` (kopf has started)."""

    async def scrape(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="starting\n")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
