"""`laneway operator`: run the Kubernetes operator (laneway_operator.main does the work)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from laneway.errors import BadInput

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from laneway_operator.main import OperatorOptions, StartupError, serve
    from laneway_operator.names import PEERING_NAME
    from laneway_operator.runtime import Tuning

    if bool(args.webhook_cert) != bool(args.webhook_key):
        raise BadInput("--webhook-cert and --webhook-key: give both (the webhook serves HTTPS) "
                       "or neither (no webhook)")
    _quiet_framework()
    options = OperatorOptions(
        namespaces=tuple(args.namespace or ()),
        standalone=args.standalone,
        metrics_port=args.metrics_port,
        webhook_host=args.webhook_host or "0.0.0.0",
        webhook_port=args.webhook_port,
        webhook_cert=args.webhook_cert,
        webhook_key=args.webhook_key,
        peering_name=os.environ.get("LANEWAY_PEERING_NAME") or PEERING_NAME,
        peering_priority=_priority(os.environ.get("LANEWAY_PEERING_PRIORITY")),
        tuning=Tuning.from_env(),
    )
    try:
        asyncio.run(serve(options))
    except StartupError as exc:
        log.error("laneway operator cannot start: %s", exc)
        return 1
    return 0


def _priority(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise BadInput(f"LANEWAY_PEERING_PRIORITY: must be an integer, got {text!r}") from None


def _quiet_framework() -> None:
    """At INFO, show kopf's warnings and its peering pauses, not its routine chatter."""
    if logging.getLogger().getEffectiveLevel() < logging.INFO:
        return
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("kopf._core.engines.peering").setLevel(logging.INFO)
