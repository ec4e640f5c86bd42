"""Canonical bytes of a receipt: the exact bytes that are written, hashed and signed.

Receipts are serialized with the JSON Canonicalization Scheme (RFC 8785, through the
``rfc8785`` package): keys sorted by UTF-16 code units, no insignificant whitespace,
numbers in the shortest ECMAScript form. Two equal receipts therefore always give the
same bytes, and a verifier can re-serialize a parsed receipt and compare byte for byte.

N.B.: this module is the only code that turns a receipt into bytes. Pydantic's JSON
mode silently turns NaN and infinity into ``null``, so :func:`canonical_bytes` checks
every float before it serializes anything and raises instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import rfc8785
from pydantic import ValidationError

from selbias_audit.errors import NonFiniteError, RunError, VerificationError
from selbias_audit.receipt.model import Receipt

_MAX_SAFE_INTEGER = 2**53 - 1


def _non_finite_paths(value: Any, path: str = "$") -> Iterator[str]:
    """Yield the JSON path of every NaN or infinite float inside ``value``."""
    if isinstance(value, float):
        if not math.isfinite(value):
            yield f"{path} = {value!r}"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite_paths(item, f"{path}.{key}")
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield from _non_finite_paths(item, f"{path}[{index}]")


def canonical_json(value: Any) -> bytes:
    """Serialize a JSON-compatible value with RFC 8785 canonicalization.

    Parameters
    ----------
    value : Any
        Dicts with string keys, lists, strings, booleans, ``None``, integers within
        +-(2**53 - 1) and finite floats.

    Returns
    -------
    bytes
        The canonical UTF-8 encoding.

    Raises
    ------
    NonFiniteError
        If ``value`` contains NaN or infinity, naming the JSON path of each.
    RunError
        If ``value`` contains an integer outside the range that JSON numbers represent
        exactly, or a type that JSON has no form for.
    """
    bad = list(_non_finite_paths(value))
    if bad:
        raise NonFiniteError(
            "cannot serialize a non-finite number: " + ", ".join(bad[:5]),
            hint="record a status for a value that could not be computed instead of NaN",
        )
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as error:
        raise RunError(f"cannot serialize value as canonical JSON: {error}") from error


def canonical_bytes(receipt: Receipt) -> bytes:
    """Serialize ``receipt`` to its canonical JSON bytes (RFC 8785).

    The receipt is validated again first, so a receipt built with
    ``Receipt.model_construct`` or changed with ``model_copy(update=...)`` cannot bypass
    the model's checks.

    Parameters
    ----------
    receipt : Receipt
        The receipt to serialize.

    Returns
    -------
    bytes
        UTF-8 canonical JSON, without a trailing newline.

    Raises
    ------
    NonFiniteError
        If any float in the receipt is NaN or infinite (the message names its path).
    RunError
        If the receipt does not validate against the model.
    """
    # The python-mode dump keeps NaN as NaN, and the JSON-mode dump would hide it as null.
    bad = list(_non_finite_paths(receipt.model_dump(mode="python")))
    if bad:
        raise NonFiniteError(
            "the receipt contains non-finite numbers: " + ", ".join(bad[:5]),
            hint="record a status (for example MetricValue with status 'non_finite') instead",
        )
    data = receipt.model_dump(mode="json")
    try:
        Receipt.model_validate(data)
    except ValidationError as error:
        raise RunError(f"the receipt is invalid and was not serialized: {error}") from error
    return canonical_json(data)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"the non-standard JSON token {token} is not allowed")


def _parse_finite_float(token: str) -> float:
    # A literal such as 1e400 parses to infinity without any NaN/Infinity token.
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"the number {token} is outside the range of a double")
    return value


def _parse_int(token: str) -> int | float:
    # RFC 8785 writes an integral double such as 1e16 without a fraction. Beyond 2**53
    # only a double can have produced it, so read it back as one to keep the round trip.
    value = int(token)
    return float(value) if abs(value) > _MAX_SAFE_INTEGER else value


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_json_strict(data: bytes, *, source: str) -> Any:
    """Parse UTF-8 JSON, rejecting non-finite numbers and duplicate keys.

    Python's ``json`` module accepts ``NaN``, ``Infinity``, overflowing literals such as
    ``1e400`` and repeated keys by default. The first three are not finite numbers, and
    a repeated key lets two readers see different values.

    Parameters
    ----------
    data : bytes
        The document.
    source : str
        Name of the document for error messages, for example ``"receipt.json"``.

    Raises
    ------
    VerificationError
        If ``data`` is not strict UTF-8 JSON.
    """
    try:
        text = data.decode("utf-8")
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_parse_finite_float,
            parse_int=_parse_int,
            object_pairs_hook=_reject_duplicate_keys,
        )
    except (UnicodeDecodeError, ValueError) as error:
        raise VerificationError(f"{source} is not valid JSON: {error}") from None
