"""The request path's JSON functions give exactly what the standard library gives."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_sidecar import fastjson

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_loads_matches_the_standard_library_and_dumps_round_trips(value: object) -> None:
    text = json.dumps(value)
    assert fastjson.loads(text) == json.loads(text)
    assert fastjson.loads(text.encode()) == json.loads(text.encode())
    assert json.loads(fastjson.dumps(value)) == value


@pytest.mark.parametrize(
    "raw",
    [b"NaN", b"[1e400]", b'"\\ud800"', b"123456789012345678901234567890", b"\xef\xbb\xbf{}",
     '{"a": 1}'.encode("utf-16")],
)
def test_inputs_only_the_standard_library_accepts_are_still_accepted(raw: bytes) -> None:
    got, want = fastjson.loads(raw), json.loads(raw)
    assert got == want or (math.isnan(got) and math.isnan(want))


@pytest.mark.parametrize("raw", [b"", b"{nope", b"[1,]", b"\xff"])
def test_input_that_is_not_json_raises_the_standard_librarys_error(raw: bytes) -> None:
    with pytest.raises(ValueError) as got:
        fastjson.loads(raw)
    with pytest.raises(ValueError) as want:
        json.loads(raw)
    assert str(got.value) == str(want.value)


def test_dumps_writes_integers_beyond_64_bits() -> None:
    assert fastjson.dumps({"seed": 2**70}) == b'{"seed":1180591620717411303424}'


def test_dumps_writes_a_float_that_is_not_finite_as_null() -> None:
    assert fastjson.dumps([math.inf, math.nan]) == b"[null,null]"


def test_a_repeated_key_keeps_its_last_value_as_in_the_standard_library() -> None:
    assert fastjson.loads(b'{"a": 1, "a": 2}') == json.loads(b'{"a": 1, "a": 2}') == {"a": 2}
