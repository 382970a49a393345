"""`laneway compile`: ModelLane and RoutingPolicy manifests in, the router config out, offline.

Called by `laneway.cli`. The same compiler runs in the operator, so what CI compiles here is
byte for byte what the operator would publish for the same objects (lanes' phases aside: offline
every lane is `Unknown`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from laneway.errors import BadInput
from laneway_operator.compiler import render_config
from laneway_operator.manifests import compile_files

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    doc = compile_files(args.files, args.policy, args.namespace)
    text = render_config(doc)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{args.output}: cannot write the config: {exc.strerror}") from exc
    policy = doc["policy"]
    log.info(
        "compiled RoutingPolicy %s/%s to %s (version %s)",
        policy["namespace"],
        policy["name"],
        args.output,
        doc["version"],
    )
    return 0
