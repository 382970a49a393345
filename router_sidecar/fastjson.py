"""JSON on the request path: orjson where it gives the same answer, the standard library else.

`server.py` parses request bodies, `engine.py` serialises provider requests and parses answers, and
the provider adapters parse stream chunks with these two functions; everything the client or a log
reader sees (error bodies, translated answers and chunks, explain output, the decision log) is
still written by the standard library, byte for byte as before. orjson parses and writes the small
documents of a chat completion five to twenty times faster than `json`, which is several percent of
the router's whole time per request.

`loads` returns what `json.loads` returns: for the inputs orjson refuses and `json` accepts (`NaN`,
numbers beyond float range, lone surrogates, a UTF-8 byte-order mark, UTF-16 or UTF-32 bytes) and
for integers beyond 64 bits (which orjson would read as floats) it asks `json.loads`, which also
writes the error message for input that is not JSON at all. `dumps` writes compact UTF-8 JSON; what
orjson cannot write (an integer beyond 64 bits) the standard library writes. A float that is not
finite, which only a non-standard body can hold, is written as `null` rather than the invalid
`NaN`.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# orjson reads integers beyond 64 bits as floats, where `json` keeps them exact. Such a number
# has at least 19 digits in a row; mapping every digit to "0" finds a run of them at C speed.
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_RUN = b"0" * 19


def loads(data: bytes | str) -> Any:
    """Exactly `json.loads(data)`, faster; raises ValueError for input that is not JSON."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if _LONG_RUN in raw.translate(_DIGITS_AS_ZERO):
        return json.loads(data)  # perhaps a very long integer: only `json` keeps it exact
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(data)  # `data` as given: `json` guesses the encoding of bytes


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes of a parsed JSON document (dicts, lists, strings, numbers, ...)."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
