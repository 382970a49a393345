"""`laneway simulate-provider`: run a simulated LLM provider in the foreground.

Called by `laneway.cli`. The server itself is `router_sidecar.simulator.SimulatedProvider`;
this module checks the arguments, logs the URL once, and stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from laneway.errors import BadInput
from router_sidecar.simulator import SimulatedProvider

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise BadInput(f"--port must be between 0 and 65535; got {args.port}")
    if args.latency_ms < 0:
        raise BadInput(f"--latency-ms must be 0 or more; got {args.latency_ms}")
    provider = SimulatedProvider(
        host=args.host,
        port=args.port,
        model=args.model,
        api=args.api,
        latency_ms=args.latency_ms,
        api_key=args.api_key,
    )
    return asyncio.run(_serve(provider))


async def _serve(provider: SimulatedProvider) -> int:
    try:
        await provider.start()
    except OSError as exc:
        log.error("cannot listen on the requested address, exiting: %s", exc)
        return 1

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    log.info(
        "simulated %s provider for model %s listening on %s (control: POST %s/_control)",
        provider.state["api"],
        provider.state["model"],
        provider.url,
        provider.url.removesuffix("/v1"),
    )
    try:
        await stopping.wait()
    finally:
        await provider.stop()
    log.info("simulated provider stopped")
    return 0
