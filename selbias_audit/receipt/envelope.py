"""The signed envelope: a DSSE envelope that carries an in-toto Statement v1.

Layout of ``receipt.intoto.dsse.json``::

    {"payloadType": "application/vnd.in-toto+json",
     "payload": base64(statement bytes),
     "signatures": [{"keyid": <key id>, "sig": base64(Ed25519 signature)}]}

The signature covers the DSSE v1 pre-authentication encoding of the payload type and
the payload (:func:`pre_authentication_encoding`), never the JSON of the envelope, so the
statement bytes are exactly what was signed. The statement (canonical JSON) is::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": ..., "digest": {"sha256": ...}}, ...],
     "predicateType": PREDICATE_TYPE,
     "predicate": {"receipt": {"name", "schemaVersion"}, "runName", "auditedSelector",
                   "verdict": {"passed", "summary"}, "outputs", "runDescription",
                   "inputsRoot", "signer": {"algorithm", "keyid", "publicKey"}}}

Subject names
-------------
Every subject name is a relative POSIX path, resolved against the folder that contains
the envelope, so a bundle that is copied as a whole verifies where it lands:

- Outputs (the receipt JSON, the PDF, the HTML) sit beside the envelope and are named
  by their file name, for example ``receipt.json``. The predicate lists them in
  ``outputs``.
- The run description and every input file are named by their path relative to the
  envelope's folder, for example ``../run.yaml`` or ``../data/features.npz``. The
  predicate's ``runDescription`` names the run description's subject.
- ``inputsRoot`` is the run description's folder relative to the envelope's folder
  (``..`` in the examples). A reviewer who holds the inputs elsewhere passes that folder
  as the inputs root to verification, and each input then resolves to
  ``<inputs root>/<name relative to inputsRoot>``: ``../data/features.npz`` becomes
  ``<inputs root>/data/features.npz``.

Absolute names, backslashes and empty path segments are rejected on both sides.
"""

from __future__ import annotations

import base64
import binascii
import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from selbias_audit.receipt.canonical import canonical_json
from selbias_audit.receipt.keys import key_id, raw_public_bytes
from selbias_audit.receipt.model import PREDICATE_TYPE, Receipt

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SIGNATURE_ALGORITHM = "Ed25519"
ENVELOPE_NAME = "receipt.intoto.dsse.json"

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Subject:
    """One signed file: its subject name and SHA-256 digest (lowercase hex)."""

    name: str
    sha256: str


def pre_authentication_encoding(payload_type: str, payload: bytes) -> bytes:
    """Return the DSSE v1 pre-authentication encoding (PAE) of a payload.

    ``"DSSEv1" SP len(type) SP type SP len(body) SP body``, where the lengths are the
    ASCII decimal byte counts of the UTF-8 type and of the body. Signing the PAE instead
    of the body binds the payload type to the signature.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def check_subject_name(name: str) -> str:
    """Return ``name`` if it is a safe relative POSIX path, else raise ValueError."""
    if not name or "\\" in name or "\x00" in name:
        raise ValueError(f"subject name {name!r} is not a relative POSIX path")
    if posixpath.isabs(name) or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"subject name {name!r} is absolute, but names must be relative")
    if any(part in ("", ".") for part in name.split("/")):
        raise ValueError(f"subject name {name!r} has an empty or '.' path segment")
    return name


def resolve_subject(
    name: str,
    *,
    envelope_dir: Path,
    outputs: Sequence[str],
    inputs_root_name: str,
    inputs_root: Path | None = None,
) -> Path:
    """Return the file that the subject ``name`` refers to.

    Parameters
    ----------
    name : str
        Subject name from the statement.
    envelope_dir : Path
        Folder of the envelope file.
    outputs : Sequence[str]
        The predicate's ``outputs`` (names of files beside the envelope).
    inputs_root_name : str
        The predicate's ``inputsRoot``.
    inputs_root : Path or None
        Folder that replaces ``envelope_dir / inputsRoot`` for every subject that is not
        an output.
    """
    check_subject_name(name)
    if name in outputs or inputs_root is None:
        base, relative = envelope_dir, name
    else:
        base, relative = inputs_root, posixpath.relpath(name, inputs_root_name)
    # The writer named files relative to the resolved output folder, so ".." is taken
    # lexically from the resolved base, as it was there.
    return Path(os.path.normpath(Path(base).resolve() / relative))


def build_statement(
    receipt: Receipt,
    subjects: Sequence[Subject],
    *,
    public_key: Ed25519PublicKey,
    receipt_name: str,
    outputs: Sequence[str],
    run_description_name: str,
    inputs_root_name: str,
) -> dict[str, Any]:
    """Build the in-toto Statement v1 for a set of signed files.

    Parameters
    ----------
    receipt : Receipt
        The receipt whose verdict the predicate summarizes.
    subjects : Sequence[Subject]
        Every signed file, named as described in the module docstring.
    public_key : Ed25519PublicKey
        Public half of the signing key, embedded so that an unpinned verification can
        still check integrity.
    receipt_name, run_description_name : str
        Subject names of the receipt JSON and of the run description.
    outputs : Sequence[str]
        Subject names of the files written beside the envelope.
    inputs_root_name : str
        The run description's folder relative to the envelope's folder.
    """
    for subject in subjects:
        check_subject_name(subject.name)
        if not _SHA256_HEX.match(subject.sha256):
            raise ValueError(f"subject {subject.name!r} has an invalid sha256 digest")
    names = [subject.name for subject in subjects]
    if len(set(names)) != len(names):
        raise ValueError(f"subject names are not unique: {names}")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": subject.name, "digest": {"sha256": subject.sha256}} for subject in subjects
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "receipt": {"name": receipt_name, "schemaVersion": receipt.schema_version},
            "runName": receipt.run_name,
            "auditedSelector": receipt.audited_selector,
            "verdict": {"passed": receipt.verdict.passed, "summary": receipt.verdict.summary},
            "outputs": list(outputs),
            "runDescription": run_description_name,
            "inputsRoot": inputs_root_name,
            "signer": {
                "algorithm": SIGNATURE_ALGORITHM,
                "keyid": key_id(public_key),
                "publicKey": base64.b64encode(raw_public_bytes(public_key)).decode("ascii"),
            },
        },
    }


def sign_envelope(
    payload: bytes, private_key: Ed25519PrivateKey, *, payload_type: str = PAYLOAD_TYPE
) -> dict[str, Any]:
    """Sign ``payload`` and wrap it in a DSSE envelope with one Ed25519 signature."""
    signature = private_key.sign(pre_authentication_encoding(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {
                "keyid": key_id(private_key.public_key()),
                "sig": base64.b64encode(signature).decode("ascii"),
            }
        ],
    }


def sign_statement(statement: dict[str, Any], private_key: Ed25519PrivateKey) -> bytes:
    """Serialize ``statement`` canonically, sign it and return the envelope file's bytes."""
    envelope = sign_envelope(canonical_json(statement), private_key)
    return canonical_json(envelope) + b"\n"


def decode_base64(text: str) -> bytes:
    """Decode standard or URL-safe base64, as DSSE allows both, rejecting stray characters.

    Raises
    ------
    ValueError
        If ``text`` is not valid base64 in either alphabet.
    """
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        pass
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not valid base64")
    try:
        return base64.urlsafe_b64decode(text)
    except binascii.Error as error:
        raise ValueError(f"not valid base64: {error}") from None
