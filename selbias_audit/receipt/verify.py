"""Verification of a signed receipt bundle.

:func:`verify_outputs` runs the checks in a fixed order and stops at the first one that
fails: the envelope, its payload type, the signature, the statement, every subject's
digest, the receipt itself, the predicate against the receipt, and the signing key id.
Subject names are resolved as described in :mod:`selbias_audit.receipt.envelope`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from selbias_audit.errors import SelbiasError, VerificationError
from selbias_audit.receipt.canonical import canonical_bytes, parse_json_strict
from selbias_audit.receipt.envelope import (
    PAYLOAD_TYPE,
    STATEMENT_TYPE,
    check_subject_name,
    decode_base64,
    pre_authentication_encoding,
    resolve_subject,
)
from selbias_audit.receipt.keys import key_id, load_public_key
from selbias_audit.receipt.model import PREDICATE_TYPE, Receipt


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one verification check."""

    name: str
    ok: bool
    detail: str


class VerificationFailed(VerificationError):
    """A failed check. ``checks`` contains the results of the checks run, the failed one last."""

    def __init__(self, message: str, *, checks: list[CheckResult]) -> None:
        super().__init__(message)
        self.checks = checks


@dataclass
class _Checks:
    results: list[CheckResult] = field(default_factory=list)

    def ok(self, name: str, detail: str) -> None:
        self.results.append(CheckResult(name, True, detail))

    def fail(self, name: str, detail: str) -> NoReturn:
        self.results.append(CheckResult(name, False, detail))
        raise VerificationFailed(f"{name}: {detail}", checks=list(self.results))


def _short(digest: str) -> str:
    return digest[:12]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_JSON_TYPES = {dict: "object", list: "array", str: "string"}


def _require(checks: _Checks, name: str, value: Any, kind: type, label: str) -> Any:
    if not isinstance(value, kind):
        checks.fail(name, f"{label} is missing or not a JSON {_JSON_TYPES[kind]}")
    return value


def _read_envelope(checks: _Checks, path: Path) -> tuple[str, bytes, list[dict[str, Any]]]:
    """Check 1: the envelope parses and has the DSSE fields."""
    try:
        data = path.read_bytes()
    except OSError as error:
        checks.fail("envelope", f"cannot read {path}: {error.strerror}")
    try:
        envelope = parse_json_strict(data, source=str(path))
    except VerificationError as error:
        checks.fail("envelope", error.message)
    _require(checks, "envelope", envelope, dict, "the envelope")
    payload_type = _require(checks, "envelope", envelope.get("payloadType"), str, "payloadType")
    payload_text = _require(checks, "envelope", envelope.get("payload"), str, "payload")
    signatures = _require(checks, "envelope", envelope.get("signatures"), list, "signatures")
    well_formed = all(isinstance(s, dict) and isinstance(s.get("sig"), str) for s in signatures)
    if not signatures or not well_formed:
        checks.fail("envelope", "signatures must be a non-empty list of objects with a 'sig'")
    try:
        payload = decode_base64(payload_text)
    except ValueError:
        checks.fail("envelope", "payload is not valid base64")
    checks.ok("envelope", f"{path.name} is a DSSE envelope with {len(signatures)} signature(s)")
    return payload_type, payload, signatures


def _embedded_key(checks: _Checks, statement: Any) -> Ed25519PublicKey:
    """Return the public key that the (not yet verified) statement names as its signer."""
    try:
        encoded = statement["predicate"]["signer"]["publicKey"]
        return Ed25519PublicKey.from_public_bytes(decode_base64(encoded))
    except (KeyError, TypeError, ValueError):
        checks.fail("signature", "no --key was given and the statement embeds no valid signer key")


def _check_signature(
    checks: _Checks,
    payload_type: str,
    payload: bytes,
    signatures: list[dict[str, Any]],
    statement: Any,
    public_key_path: Path | None,
) -> Ed25519PublicKey:
    """Check 3: one signature verifies with the pinned key, or else the embedded one."""
    if public_key_path is not None:
        public_key = load_public_key(public_key_path)
    else:
        public_key = _embedded_key(checks, statement)
    message = pre_authentication_encoding(payload_type, payload)
    for entry in signatures:
        try:
            public_key.verify(decode_base64(entry["sig"]), message)
        except (InvalidSignature, ValueError):
            continue
        break
    else:
        source = "pinned key" if public_key_path else "key embedded in the statement"
        checks.fail(
            "signature",
            f"no signature verifies with the {source} (key id {_short(key_id(public_key))}...)",
        )
    if public_key_path is not None:
        checks.ok("signature", f"valid Ed25519 signature by pinned key {key_id(public_key)}")
    else:
        checks.ok(
            "signature",
            f"valid Ed25519 signature by key {key_id(public_key)}, which the statement itself "
            "names; the key was NOT pinned, so this shows integrity, not who signed "
            "(pass --key with the signer's public key)",
        )
    return public_key


def _check_statement(
    checks: _Checks, statement: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Check 4: the statement type, predicate type, subjects and predicate fields."""
    name = "statement"
    _require(checks, name, statement, dict, "the statement")
    if statement.get("_type") != STATEMENT_TYPE:
        checks.fail(name, f"_type is {statement.get('_type')!r}, expected {STATEMENT_TYPE!r}")
    if statement.get("predicateType") != PREDICATE_TYPE:
        checks.fail(
            name,
            f"predicateType is {statement.get('predicateType')!r}, expected {PREDICATE_TYPE!r}",
        )

    subjects = _require(checks, name, statement.get("subject"), list, "subject")
    seen: set[str] = set()
    for subject in subjects:
        digest = subject.get("digest") if isinstance(subject, dict) else None
        sha256 = digest.get("sha256") if isinstance(digest, dict) else None
        subject_name = subject.get("name") if isinstance(subject, dict) else None
        if not isinstance(subject_name, str) or not isinstance(sha256, str) or len(sha256) != 64:
            checks.fail(name, f"subject {subject!r} lacks a name or a sha256 digest")
        try:
            check_subject_name(subject_name)
        except ValueError as error:
            checks.fail(name, str(error))
        if subject_name in seen:
            checks.fail(name, f"subject {subject_name!r} appears twice")
        seen.add(subject_name)

    predicate = _require(checks, name, statement.get("predicate"), dict, "predicate")
    receipt_field = _require(checks, name, predicate.get("receipt"), dict, "predicate.receipt")
    receipt_name = receipt_field.get("name")
    outputs = _require(checks, name, predicate.get("outputs"), list, "predicate.outputs")
    if not all(isinstance(output, str) and "/" not in output for output in outputs):
        checks.fail(name, "predicate.outputs must list file names beside the envelope")
    if receipt_name not in outputs or receipt_name not in seen:
        checks.fail(name, f"the receipt {receipt_name!r} is not among the signed outputs")

    root = _require(checks, name, predicate.get("inputsRoot"), str, "predicate.inputsRoot")
    try:
        if root != ".":
            check_subject_name(root)
    except ValueError:
        checks.fail(name, f"predicate.inputsRoot {root!r} is not a relative POSIX path")
    checks.ok(
        name, f"in-toto Statement v1, predicate type {PREDICATE_TYPE}, {len(subjects)} subjects"
    )
    return subjects, predicate


def _check_subjects(
    checks: _Checks,
    subjects: list[dict[str, Any]],
    predicate: dict[str, Any],
    envelope_dir: Path,
    inputs_root: Path | None,
) -> dict[str, bytes]:
    """Check 5: every subject's digest matches its file. Returns the receipt's bytes."""
    receipt_name = predicate["receipt"]["name"]
    receipt_bytes: dict[str, bytes] = {}
    for subject in subjects:
        name, expected = subject["name"], subject["digest"]["sha256"]
        path = resolve_subject(
            name,
            envelope_dir=envelope_dir,
            outputs=predicate["outputs"],
            inputs_root_name=predicate["inputsRoot"],
            inputs_root=inputs_root,
        )
        try:
            if name == receipt_name:
                # The receipt's bytes are parsed later, so hash exactly the bytes read here.
                receipt_bytes[name] = path.read_bytes()
                actual = hashlib.sha256(receipt_bytes[name]).hexdigest()
            else:
                actual = _sha256_file(path)
        except FileNotFoundError:
            checks.fail(f"subject {name}", f"file {path} not found")
        except OSError as error:
            checks.fail(f"subject {name}", f"cannot read {path}: {error.strerror}")
        if actual != expected:
            checks.fail(
                f"subject {name}",
                f"{path} does not match: sha256 expected {_short(expected)}..., "
                f"found {_short(actual)}...",
            )
        checks.ok(f"subject {name}", f"sha256 {_short(actual)}... matches {path}")
    return receipt_bytes


def _check_receipt(checks: _Checks, name: str, data: bytes) -> Receipt:
    """Check 6: the receipt parses strictly, validates, and is in canonical form."""
    try:
        document = parse_json_strict(data, source=name)
    except VerificationError as error:
        checks.fail("receipt", error.message)
    try:
        receipt = Receipt.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        checks.fail(
            "receipt",
            f"{name} is not a valid receipt ({error.error_count()} error(s), first at "
            f"{location or '$'}: {first['msg']})",
        )
    try:
        canonical = canonical_bytes(receipt)
    except SelbiasError as error:
        checks.fail("receipt", f"{name} cannot be serialized canonically: {error.message}")
    if canonical != data:
        offset = next(
            (i for i, (a, b) in enumerate(zip(canonical, data, strict=False)) if a != b),
            min(len(canonical), len(data)),
        )
        checks.fail(
            "receipt",
            f"{name} is not in canonical JSON form (RFC 8785): first difference at byte {offset}",
        )
    checks.ok("receipt", f"{name} is a valid, canonical schema {receipt.schema_version} receipt")
    return receipt


def _check_predicate(
    checks: _Checks,
    receipt: Receipt,
    predicate: dict[str, Any],
    subjects: list[dict[str, Any]],
) -> None:
    """Check 7: the signed predicate and subjects agree with the receipt's contents."""
    name = "predicate"
    expected = {
        "receipt.schemaVersion": receipt.schema_version,
        "runName": receipt.run_name,
        "auditedSelector": receipt.audited_selector,
        "verdict.passed": receipt.verdict.passed,
        "verdict.summary": receipt.verdict.summary,
    }
    for dotted, value in expected.items():
        found: Any = predicate
        for part in dotted.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if found != value:
            checks.fail(name, f"predicate {dotted} is {found!r}, but the receipt has {value!r}")

    # N.B.: every input digest in the receipt must be a signed, checked subject, or the
    # receipt could claim inputs that verification never looked at.
    listed = {receipt.run_description.sha256} | {item.sha256 for item in receipt.inputs}
    outputs = predicate["outputs"]
    signed = {s["digest"]["sha256"] for s in subjects if s["name"] not in outputs}
    if listed != signed:
        missing = ", ".join(_short(d) + "..." for d in sorted(listed - signed)) or "none"
        extra = ", ".join(_short(d) + "..." for d in sorted(signed - listed)) or "none"
        checks.fail(
            name,
            f"input digests in the receipt differ from the signed input subjects "
            f"(only in the receipt: {missing}; only in the envelope: {extra})",
        )
    checks.ok(name, "verdict, run name, selector and input digests agree with the receipt")


def _check_key_id(
    checks: _Checks, receipt: Receipt, predicate: dict[str, Any], public_key: Ed25519PublicKey
) -> None:
    """Check 8: the receipt and the predicate name the key that signed the envelope."""
    signer = key_id(public_key)
    if receipt.signing_key_id != signer:
        checks.fail(
            "signing key id",
            f"the receipt names key {_short(receipt.signing_key_id)}..., "
            f"the envelope was signed by {_short(signer)}...",
        )
    named = (predicate.get("signer") or {}).get("keyid")
    if named != signer:
        checks.fail(
            "signing key id",
            f"the predicate names key {str(named)[:12]}..., "
            f"the envelope was signed by {_short(signer)}...",
        )
    checks.ok("signing key id", f"receipt and predicate name the signing key {signer}")


def verify_outputs(
    envelope_path: Path,
    *,
    public_key_path: Path | None = None,
    inputs_root: Path | None = None,
) -> list[CheckResult]:
    """Verify a signed receipt bundle.

    Parameters
    ----------
    envelope_path : Path
        The ``receipt.intoto.dsse.json`` file.
    public_key_path : Path or None
        The signer's public key (PEM). Without it the signature is checked against the
        key embedded in the statement, which shows integrity but not who signed.
    inputs_root : Path or None
        Folder that contains the run description and input files, when they are not
        where the envelope's relative names point.

    Returns
    -------
    list[CheckResult]
        One result per check, all passed.

    Raises
    ------
    VerificationFailed
        A :class:`VerificationError` (exit code 4) at the first failed check. Its message
        names the check and what does not match, and ``checks`` lists the results of the
        checks that ran.
    SpecError
        If ``public_key_path`` is not a readable Ed25519 public key.
    """
    checks = _Checks()
    envelope_path = Path(envelope_path)
    payload_type, payload, signatures = _read_envelope(checks, envelope_path)
    if payload_type != PAYLOAD_TYPE:
        checks.fail("payload type", f"payloadType is {payload_type!r}, expected {PAYLOAD_TYPE!r}")
    checks.ok("payload type", PAYLOAD_TYPE)

    # The statement is parsed before the signature check only to find an embedded key.
    try:
        statement = parse_json_strict(payload, source="the statement")
    except VerificationError as error:
        statement = None
        if public_key_path is None:
            checks.fail("signature", error.message)
    public_key = _check_signature(
        checks, payload_type, payload, signatures, statement, public_key_path
    )
    if statement is None:
        checks.fail("statement", "the signed payload is not valid JSON")

    subjects, predicate = _check_statement(checks, statement)
    receipt_bytes = _check_subjects(
        checks, subjects, predicate, envelope_path.parent, inputs_root
    )
    receipt_name = predicate["receipt"]["name"]
    receipt = _check_receipt(checks, receipt_name, receipt_bytes[receipt_name])
    _check_predicate(checks, receipt, predicate, subjects)
    _check_key_id(checks, receipt, predicate, public_key)
    _check_artifacts(checks, receipt, envelope_path.parent)
    return checks.results


def _check_artifacts(checks: _Checks, receipt: Receipt, folder: Path) -> None:
    # Generated artifacts (such as rounds.csv) are not envelope subjects, but their digests
    # sit inside the signed receipt, so checking them against the files is as strong.
    for artifact in receipt.governance.artifacts:
        path = folder / artifact.path
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            checks.fail(f"artifact {artifact.path}", f"{path} not found or unreadable")
        if digest != artifact.sha256:
            checks.fail(
                f"artifact {artifact.path}",
                f"{path} has sha256 {digest[:12]}..., the signed receipt records "
                f"{artifact.sha256[:12]}...",
            )
        checks.ok(f"artifact {artifact.path}", f"sha256 {digest[:12]}... matches {path}")
