"""JSON on the request path: orjson where it gives the same answer, the standard library else.

`server.py` parses request bodies, `engine.py` serialises provider requests and parses answers,
and the provider adapters parse stream chunks with these two functions; everything the client or
a log reader sees (error bodies, translated answers and chunks, explain output, the decision log)
is still written by the standard library, byte for byte as before. orjson parses and writes the
small documents of a chat completion five to twenty times faster than `json`, which is several
percent of the router's whole time per request.

`loads` returns what `json.loads` returns: for the inputs orjson refuses and `json` accepts
(`NaN`, numbers beyond 64 bits or beyond float range, lone surrogates, a UTF-8 byte-order mark,
UTF-16 or UTF-32 bytes) it asks `json.loads`, which also writes the error message for input that
is not JSON at all. `dumps` writes compact UTF-8 JSON; what orjson cannot write (an integer beyond
64 bits) the standard library writes. A float that is not finite, which only a non-standard body
can hold, is written as `null` rather than the invalid `NaN`.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """Exactly `json.loads(data)`, faster; raises ValueError for input that is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes of a parsed JSON document (dicts, lists, strings, numbers, ...)."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
