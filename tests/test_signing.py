"""Signed output bundles: writing all or nothing, and verification of every tampering."""

from __future__ import annotations

import base64
import errno
import json
import os
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from selbias_audit.errors import NonFiniteError, RunError, VerificationError
from selbias_audit.receipt import outputs as outputs_module
from selbias_audit.receipt.canonical import canonical_bytes, canonical_json
from selbias_audit.receipt.envelope import (
    PAYLOAD_TYPE,
    STATEMENT_TYPE,
    decode_base64,
    pre_authentication_encoding,
    sign_statement,
)
from selbias_audit.receipt.keys import generate_keypair, key_id
from selbias_audit.receipt.model import PREDICATE_TYPE, Receipt
from selbias_audit.receipt.outputs import write_outputs
from selbias_audit.receipt.verify import VerificationFailed, verify_outputs
from tests.receipt_factory import input_overrides, make_receipt

CHECK_ORDER = ["envelope", "payload type", "signature", "statement"]


def _make_project(root: Path) -> tuple[Path, list[Path]]:
    """Write a run description and two input files under ``root``."""
    (root / "data").mkdir(parents=True)
    run = root / "run.yaml"
    run.write_text("name: signing-test\nseed: 7\n")
    features = root / "data" / "features.npz"
    features.write_bytes(bytes(range(256)) * 4)
    labels = root / "data" / "labels.csv"
    labels.write_text("0\n1\n2\n3\n")
    return run, [features, labels]


def _receipt_for(run: Path, inputs: list[Path], key: Ed25519PrivateKey, **extra: Any) -> Receipt:
    overrides = input_overrides(run, inputs)
    # verify hashes each listed artifact beside the receipt; these bundles write none
    # (the CLI tests cover a real rounds.csv).
    extra.setdefault("governance__artifacts", [])
    return make_receipt(signing_key_id=key_id(key.public_key()), **overrides, **extra)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Write one signed bundle with a PDF; tests copy it before they change anything."""
    root = tmp_path_factory.mktemp("bundle")
    project = root / "project"
    run, inputs = _make_project(project)
    key = generate_keypair(root / "signer.pem", root / "signer.pub.pem")
    generate_keypair(root / "other.pem", root / "other.pub.pem")
    written = write_outputs(
        _receipt_for(run, inputs, key), project / "out", run_description=run, inputs=inputs,
        private_key=key,
    )
    return {"root": root, "project": project, "key": key, "written": written}


@pytest.fixture
def copy(bundle: dict[str, Any], tmp_path: Path) -> Path:
    """Return a fresh copy of the bundle's project folder."""
    target = tmp_path / "project"
    shutil.copytree(bundle["project"], target)
    return target


def _envelope(project: Path) -> Path:
    return project / "out" / "receipt.intoto.dsse.json"


def _statement(project: Path) -> dict[str, Any]:
    envelope = json.loads(_envelope(project).read_text())
    return json.loads(decode_base64(envelope["payload"]))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))


def _failure(envelope: Path, **options: Any) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as info:
        verify_outputs(envelope, **options)
    assert isinstance(info.value, VerificationError)
    assert info.value.exit_code == 4
    assert not info.value.checks[-1].ok
    assert all(result.ok for result in info.value.checks[:-1])
    return info.value


def test_bundle_files_written(bundle: dict[str, Any]) -> None:
    out = bundle["project"] / "out"
    names = sorted(path.name for path in out.iterdir())
    assert names == ["receipt.intoto.dsse.json", "receipt.json", "receipt.pdf"]
    assert bundle["written"].pdf == out / "receipt.pdf"
    assert bundle["written"].html is None


def test_statement_layout(bundle: dict[str, Any]) -> None:
    statement = _statement(bundle["project"])
    assert statement["_type"] == STATEMENT_TYPE
    names = [subject["name"] for subject in statement["subject"]]
    assert names == [
        "receipt.json", "receipt.pdf", "../run.yaml", "../data/features.npz", "../data/labels.csv"
    ]
    predicate = statement["predicate"]
    assert predicate["inputsRoot"] == ".."
    assert predicate["runDescription"] == "../run.yaml"
    assert predicate["verdict"] == {"passed": False, "summary": make_receipt().verdict.summary}
    assert predicate["signer"]["keyid"] == key_id(bundle["key"].public_key())


def test_verify_ok_with_pinned_key(bundle: dict[str, Any], copy: Path) -> None:
    results = verify_outputs(_envelope(copy), public_key_path=bundle["root"] / "signer.pub.pem")
    assert all(result.ok for result in results)
    assert [result.name for result in results[:4]] == CHECK_ORDER
    assert [r.name for r in results[-3:]] == ["receipt", "predicate", "signing key id"]
    assert sum(r.name.startswith("subject ") for r in results) == 5
    assert "pinned key" in results[2].detail


def test_verify_ok_unpinned_says_so(copy: Path) -> None:
    results = verify_outputs(_envelope(copy))
    assert all(result.ok for result in results)
    assert "NOT pinned" in results[2].detail


def test_verify_fails_on_changed_receipt_byte(copy: Path) -> None:
    _flip_last_byte(copy / "out" / "receipt.json")
    error = _failure(_envelope(copy))
    assert error.checks[-1].name == "subject receipt.json"
    assert "sha256 expected" in error.message
    assert "found" in error.message


def test_verify_fails_on_changed_pdf_byte(copy: Path) -> None:
    _flip_last_byte(copy / "out" / "receipt.pdf")
    error = _failure(_envelope(copy))
    assert error.checks[-1].name == "subject receipt.pdf"


def test_verify_fails_on_changed_input(copy: Path) -> None:
    (copy / "data" / "labels.csv").write_text("0\n1\n2\n4\n")
    error = _failure(_envelope(copy))
    assert error.checks[-1].name == "subject ../data/labels.csv"
    assert "labels.csv does not match" in error.message


def test_verify_fails_on_missing_subject(copy: Path) -> None:
    (copy / "run.yaml").unlink()
    error = _failure(_envelope(copy))
    assert error.checks[-1].name == "subject ../run.yaml"
    assert "run.yaml not found" in error.message


def test_verify_fails_with_wrong_pinned_key(bundle: dict[str, Any], copy: Path) -> None:
    error = _failure(_envelope(copy), public_key_path=bundle["root"] / "other.pub.pem")
    assert error.checks[-1].name == "signature"
    assert "pinned key" in error.message


def test_verify_fails_on_changed_payload_type(copy: Path) -> None:
    envelope = json.loads(_envelope(copy).read_text())
    envelope["payloadType"] = "application/json"
    _envelope(copy).write_text(json.dumps(envelope))
    error = _failure(_envelope(copy))
    assert error.checks[-1].name == "payload type"
    assert "application/json" in error.message


def test_verify_fails_on_other_predicate_type(bundle: dict[str, Any], copy: Path) -> None:
    # Signed by the right key, so only the check inside the signed bytes can catch it.
    statement = _statement(copy)
    statement["predicateType"] = "https://example.com/other/v1"
    _envelope(copy).write_bytes(sign_statement(statement, bundle["key"]))
    error = _failure(_envelope(copy), public_key_path=bundle["root"] / "signer.pub.pem")
    assert error.checks[-1].name == "statement"
    assert "predicateType is 'https://example.com/other/v1'" in error.message


def test_verify_fails_on_forged_signature(copy: Path) -> None:
    envelope = json.loads(_envelope(copy).read_text())
    statement = json.loads(decode_base64(envelope["payload"]))
    statement["predicate"]["verdict"]["passed"] = True
    envelope["payload"] = base64.b64encode(canonical_json(statement)).decode()
    _envelope(copy).write_text(json.dumps(envelope))
    error = _failure(_envelope(copy))
    assert error.checks[-1].name == "signature"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"payloadType": 1}',
        '{"payloadType": "x", "payload": "%%%", "signatures": [{"sig": "AA=="}]}',
        '{"payloadType": "x", "payload": "e30=", "signatures": []}',
        '{"payloadType": "x", "payload": "e30=", "signatures": ["AA=="]}',
    ],
)
def test_verify_rejects_malformed_envelope(copy: Path, text: str) -> None:
    _envelope(copy).write_text(text)
    error = _failure(_envelope(copy))
    assert error.checks[-1].name == "envelope"


@pytest.mark.parametrize(
    "statement",
    [
        [],
        {"_type": STATEMENT_TYPE},
        {"_type": STATEMENT_TYPE, "predicateType": PREDICATE_TYPE, "subject": [1]},
        {"_type": STATEMENT_TYPE, "predicateType": PREDICATE_TYPE, "subject": [], "predicate": 1},
        {
            "_type": STATEMENT_TYPE,
            "predicateType": PREDICATE_TYPE,
            "subject": [{"name": "/etc/passwd", "digest": {"sha256": "0" * 64}}],
            "predicate": {},
        },
        {
            "_type": STATEMENT_TYPE,
            "predicateType": PREDICATE_TYPE,
            "subject": [{"name": "receipt.json", "digest": {"sha256": "0" * 64}}],
            "predicate": {"receipt": {"name": "receipt.json"}, "outputs": ["../receipt.json"]},
        },
    ],
)
def test_verify_rejects_malformed_statement(
    bundle: dict[str, Any], copy: Path, statement: Any
) -> None:
    _envelope(copy).write_bytes(sign_statement(statement, bundle["key"]))
    error = _failure(_envelope(copy), public_key_path=bundle["root"] / "signer.pub.pem")
    assert error.checks[-1].name == "statement"


def _resign_with_receipt(project: Path, key: Ed25519PrivateKey, receipt_bytes: bytes) -> None:
    """Replace receipt.json and sign a statement with its new digest, as a signer could."""
    import hashlib

    (project / "out" / "receipt.json").write_bytes(receipt_bytes)
    statement = _statement(project)
    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(receipt_bytes).hexdigest()
    _envelope(project).write_bytes(sign_statement(statement, key))


def test_verify_rejects_signed_receipt_with_nan(bundle: dict[str, Any], copy: Path) -> None:
    data = (copy / "out" / "receipt.json").read_bytes()
    assert b'"tail_retention":0.8333' in data
    tampered = data.replace(b'"tail_retention":0.8333', b'"tail_retention":NaN', 1)
    _resign_with_receipt(copy, bundle["key"], tampered)
    error = _failure(_envelope(copy), public_key_path=bundle["root"] / "signer.pub.pem")
    assert error.checks[-1].name == "receipt"
    assert "NaN is not allowed" in error.message


def test_verify_rejects_non_canonical_receipt(bundle: dict[str, Any], copy: Path) -> None:
    data = (copy / "out" / "receipt.json").read_bytes()
    pretty = json.dumps(json.loads(data), indent=2).encode()
    _resign_with_receipt(copy, bundle["key"], pretty)
    error = _failure(_envelope(copy))
    assert error.checks[-1].name == "receipt"
    assert "not in canonical JSON form" in error.message


def test_verify_rejects_receipt_naming_other_key(bundle: dict[str, Any], copy: Path) -> None:
    other = Ed25519PrivateKey.generate()
    statement = _statement(copy)
    statement["predicate"]["signer"]["keyid"] = key_id(other.public_key())
    statement["predicate"]["signer"]["publicKey"] = base64.b64encode(
        other.public_key().public_bytes_raw()
    ).decode()
    _envelope(copy).write_bytes(sign_statement(statement, other))
    error = _failure(_envelope(copy))
    assert error.checks[-1].name == "signing key id"


def test_verify_with_inputs_root(bundle: dict[str, Any], tmp_path: Path) -> None:
    # The reviewer received the outputs alone and keeps the inputs in another folder.
    outputs = tmp_path / "received"
    shutil.copytree(bundle["project"] / "out", outputs)
    inputs = tmp_path / "inputs"
    shutil.copytree(bundle["project"], inputs, ignore=shutil.ignore_patterns("out"))
    with pytest.raises(VerificationFailed, match="not found"):
        verify_outputs(outputs / "receipt.intoto.dsse.json")
    results = verify_outputs(outputs / "receipt.intoto.dsse.json", inputs_root=inputs)
    assert all(result.ok for result in results)


def test_pre_authentication_encoding_layout() -> None:
    assert pre_authentication_encoding("a/b", b"hello") == b"DSSEv1 3 a/b 5 hello"
    assert pre_authentication_encoding(PAYLOAD_TYPE, b"").startswith(b"DSSEv1 28 ")


def test_write_outputs_rejects_nan_and_writes_nothing(tmp_path: Path) -> None:
    run, inputs = _make_project(tmp_path / "project")
    key = Ed25519PrivateKey.generate()
    runs = make_receipt().model_dump(mode="python")["runs"]
    runs[0]["options"] = {"blur": math.nan}
    receipt = _receipt_for(run, inputs, key, runs=runs)
    out = tmp_path / "project" / "out"
    with pytest.raises(NonFiniteError, match="non-finite"):
        write_outputs(receipt, out, run_description=run, inputs=inputs, private_key=key)
    assert list(out.iterdir()) == []


def test_write_outputs_failure_keeps_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, inputs = _make_project(tmp_path / "project")
    key = Ed25519PrivateKey.generate()
    out = tmp_path / "project" / "out"
    write_outputs(_receipt_for(run, inputs, key), out, run_description=run, inputs=inputs,
                  private_key=key, pdf=False, html=True)
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def fail_render(receipt: Receipt) -> str:
        raise RunError("rendering failed on purpose")

    monkeypatch.setattr("selbias_audit.render.html.render_html", fail_render)
    changed = _receipt_for(run, inputs, key, run_name="second-run")
    with pytest.raises(RunError, match="on purpose"):
        write_outputs(changed, out, run_description=run, inputs=inputs, private_key=key,
                      pdf=False, html=True)
    after = {path.name: path.read_bytes() for path in out.iterdir()}
    assert after == before


def test_write_outputs_rolls_back_failed_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, inputs = _make_project(tmp_path / "project")
    key = Ed25519PrivateKey.generate()
    out = tmp_path / "project" / "out"
    options = {"run_description": run, "inputs": inputs, "private_key": key, "pdf": False}
    write_outputs(_receipt_for(run, inputs, key), out, html=True, **options)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    real_replace = os.replace

    def replace_failing_on_envelope(source: Any, target: Any) -> None:
        # Fail the last move into place, after receipt.json has been replaced.
        if Path(target).name == "receipt.intoto.dsse.json" and ".selbias-staging" in str(source):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_failing_on_envelope)
    changed = _receipt_for(run, inputs, key, run_name="second-run")
    with pytest.raises(RunError, match="No space left on device"):
        write_outputs(changed, out, html=False, **options)
    after = {path.name: path.read_bytes() for path in out.iterdir()}
    assert after == before


def test_write_outputs_removes_stale_html(tmp_path: Path) -> None:
    run, inputs = _make_project(tmp_path / "project")
    key = Ed25519PrivateKey.generate()
    out = tmp_path / "project" / "out"
    receipt = _receipt_for(run, inputs, key)
    options = {"run_description": run, "inputs": inputs, "private_key": key, "pdf": False}
    write_outputs(receipt, out, html=True, **options)
    assert (out / "receipt.html").is_file()
    written = write_outputs(receipt, out, html=False, **options)
    assert not (out / "receipt.html").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written.paths())
    assert all(result.ok for result in verify_outputs(written.envelope))


def test_write_outputs_rejects_changed_input(tmp_path: Path) -> None:
    run, inputs = _make_project(tmp_path / "project")
    key = Ed25519PrivateKey.generate()
    receipt = _receipt_for(run, inputs, key)
    inputs[1].write_text("changed after the audit read it\n")
    with pytest.raises(RunError, match=r"labels\.csv \(sha256 [0-9a-f]{12}\) is not listed"):
        write_outputs(receipt, tmp_path / "out", run_description=run, inputs=inputs,
                      private_key=key, pdf=False)


def test_write_outputs_rejects_other_key(tmp_path: Path) -> None:
    run, inputs = _make_project(tmp_path / "project")
    receipt = _receipt_for(run, inputs, Ed25519PrivateKey.generate())
    with pytest.raises(RunError, match="names signing key"):
        write_outputs(receipt, tmp_path / "out", run_description=run, inputs=inputs,
                      private_key=Ed25519PrivateKey.generate(), pdf=False)


def test_write_outputs_receipt_is_canonical(bundle: dict[str, Any]) -> None:
    data = (bundle["project"] / "out" / "receipt.json").read_bytes()
    receipt = Receipt.model_validate_json(data)
    assert canonical_bytes(receipt) == data
    assert outputs_module.RECEIPT_NAME == "receipt.json"
