"""Canonical JSON of receipts: golden bytes, RFC 8785 vectors, and rejection of NaN."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selbias_audit.errors import NonFiniteError, RunError, VerificationError
from selbias_audit.receipt.canonical import canonical_bytes, canonical_json, parse_json_strict
from selbias_audit.receipt.model import Band, Receipt
from tests.receipt_factory import make_receipt

ASSETS = Path(__file__).resolve().parent / "assets"
assert ASSETS.is_dir(), f"test assets folder missing at {ASSETS}"
GOLDEN = ASSETS / "golden_receipt.json"


def test_golden_receipt_bytes() -> None:
    """The factory receipt serializes to the pinned bytes.

    After an intended change of the receipt model or factory, regenerate the file with
    ``SELBIAS_UPDATE_GOLDEN=1 python -m pytest tests/test_canonical.py`` and review the diff.
    """
    data = canonical_bytes(make_receipt())
    if os.environ.get("SELBIAS_UPDATE_GOLDEN"):
        GOLDEN.write_bytes(data)
    assert data == GOLDEN.read_bytes()


def test_golden_receipt_round_trip() -> None:
    data = GOLDEN.read_bytes()
    receipt = Receipt.model_validate(parse_json_strict(data, source="golden"))
    assert canonical_bytes(receipt) == data


def test_canonical_bytes_has_no_whitespace_or_newline() -> None:
    data = canonical_bytes(make_receipt())
    assert not data.endswith(b"\n")
    assert b'": ' not in data
    assert data.startswith(b'{"audited_selector":')


def _from_bits(bits: int) -> float:
    return float(struct.unpack(">d", bits.to_bytes(8, "big"))[0])


# Doubles given by bit pattern, with the ECMAScript shortest round-trip form that
# RFC 8785 prescribes for numbers.
NUMBER_VECTORS = [
    (0x0000000000000001, b"5e-324"),
    (0x8000000000000000, b"0"),
    (0x7FEFFFFFFFFFFFFF, b"1.7976931348623157e+308"),
    (0x44B52D02C7E14AF6, b"1e+23"),
    (0x3EB0C6F7A0B5ED8D, b"0.000001"),
    (0x3EB0C6F7A0B5ED8C, b"9.999999999999997e-7"),
]


@pytest.mark.parametrize(("bits", "expected"), NUMBER_VECTORS)
def test_canonical_json_number_vectors(bits: int, expected: bytes) -> None:
    value = _from_bits(bits)
    assert canonical_json(value) == expected
    assert float(expected) == value


def test_canonical_json_sorts_keys_by_utf16() -> None:
    # Keys sort by UTF-16 code units, so the emoji (surrogates D83D DE00) precedes U+FB33.
    value = {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5, "\u0080": 6, "\u00f6": 7}
    expected = '{"\\r":2,"1":4,"\u0080":6,"\u00f6":7,"\u20ac":1,"\U0001f600":5,"\ufb33":3}'
    assert canonical_json(value) == expected.encode("utf-8")


def test_canonical_json_integral_floats_have_no_fraction() -> None:
    assert canonical_json({"b": 1.0, "a": [2.50, 1e21, 3]}) == b'{"a":[2.5,1e+21,3],"b":1}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_json_rejects_non_finite(bad: float) -> None:
    with pytest.raises(NonFiniteError, match=r"\$\.outer\[1\]"):
        canonical_json({"outer": [1.0, bad]})


def test_canonical_json_rejects_unsafe_integer() -> None:
    with pytest.raises(RunError, match="canonical JSON"):
        canonical_json({"count": 2**60})


def test_canonical_bytes_rejects_nan_in_options() -> None:
    # Options are free-form, so the model itself lets NaN through there.
    runs = make_receipt().model_dump(mode="python")["runs"]
    runs[0]["options"] = {"blur": math.nan}
    receipt = make_receipt(runs=runs)
    with pytest.raises(NonFiniteError, match=r"\$\.runs\[0\]\.options\.blur"):
        canonical_bytes(receipt)


def test_canonical_bytes_rejects_nan_bypassing_validation() -> None:
    # model_construct skips validation, and pydantic's JSON dump would turn NaN into null.
    band = Band.model_construct(round=1, mean=math.nan, std=0.0, min=0.0, max=1.0)
    receipt = make_receipt().model_copy(update={"random_band": [band]})
    with pytest.raises(NonFiniteError, match=r"random_band\[0\]\.mean"):
        canonical_bytes(receipt)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_canonical_bytes_rejects_invalid_receipt() -> None:
    receipt = make_receipt().model_copy(update={"signing_key_id": 42})
    with pytest.raises(RunError, match="invalid"):
        canonical_bytes(receipt)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "Infinity"),
        (b'{"a": 1e400}', "1e400"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b"\xff{}", "not valid JSON"),
    ],
)
def test_parse_json_strict_rejects(text: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_json_strict(text, source="doc.json")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_json_is_a_fixed_point(value: Any) -> None:
    data = canonical_json(value)
    assert canonical_json(parse_json_strict(data, source="value")) == data


def test_large_integral_float_round_trips() -> None:
    data = canonical_json({"x": 1e16})
    assert data == b'{"x":10000000000000000}'
    assert canonical_json(parse_json_strict(data, source="value")) == data
