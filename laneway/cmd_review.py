"""`laneway review`: decision and feedback lines in, per-route evidence and findings out.

Called by `laneway.cli`; the work is in `laneway.review`. Input is JSON Lines as `laneway serve`
writes them on standard output (files, or standard input with `-` or no file), for example
`kubectl logs -l app=support-bot -c laneway-router --since=168h | laneway review`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from laneway import review
from laneway.errors import BadInput


def run(args: argparse.Namespace) -> int:
    by = _group_keys(args.by)
    lines = review.Lines()
    for name in args.files or ["-"]:
        if name == "-":
            review.read_lines(sys.stdin, lines)
            continue
        try:
            with Path(name).open(encoding="utf-8", errors="replace") as fh:
                review.read_lines(fh, lines)
        except OSError as exc:
            raise BadInput(f"{name}: cannot read it: {exc.strerror}") from exc
    if not lines.decisions:
        raise BadInput(
            f"no decision lines in {', '.join(args.files or ['standard input'])} "
            f"({lines.skipped} other line(s)): give the JSON Lines laneway serve writes on "
            "standard output, for example from kubectl logs POD -c laneway-router"
        )
    result = review.review(lines, by, sample=args.sample, seed=args.seed,
                           min_feedback=args.min_feedback)
    if args.json:
        sys.stdout.write(json.dumps(review.as_json(result), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(review.render_markdown(result))
    return 0


def _group_keys(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in review.GROUP_KEYS]
    if not keys or unknown:
        raise BadInput(
            f"--by {text!r}: use one or more of {', '.join(review.GROUP_KEYS)}, comma-separated"
        )
    return keys
