"""The command line: exit codes, messages and what is left on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selbias_audit.cli import app

runner = CliRunner()


def _audit(run: Path, *extra: str):
    return runner.invoke(app, ["audit", str(run), "--quiet", *extra])


@pytest.fixture(scope="module")
def failing_audit(tmp_path_factory: pytest.TempPathFactory):
    """One small audit whose local verifier erodes the tail (gate fails)."""
    import yaml

    from tests.conftest import small_run

    folder = tmp_path_factory.mktemp("failing")
    run = folder / "run.yaml"
    run.write_text(yaml.safe_dump(small_run()))
    # Sign with an explicit key made by keygen so the test also covers --key.
    key = folder / "key.pem"
    made = runner.invoke(app, ["keygen", "--out", str(key)])
    assert made.exit_code == 0, made.output
    result = _audit(run, "--key", str(key))
    return folder, run, result


def test_failing_gate_exits_one_with_signed_outputs(failing_audit) -> None:
    folder, _, result = failing_audit
    assert result.exit_code == 1, result.output
    assert "FAIL tail_retention_vs_random" in result.output
    out = folder / "out"
    for name in ("receipt.json", "receipt.pdf", "receipt.intoto.dsse.json", "rounds.csv"):
        assert (out / name).is_file(), name
    receipt = json.loads((out / "receipt.json").read_text())
    assert receipt["verdict"]["passed"] is False


def test_verify_passes_then_detects_tampering(failing_audit, tmp_path: Path) -> None:
    import shutil

    folder, run, _ = failing_audit
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    ok = runner.invoke(app, ["verify", str(copy / "out")])
    assert ok.exit_code == 0, ok.output
    pinned = runner.invoke(app, ["verify", str(copy / "out"), "--key", str(copy / "key.pub.pem")])
    assert pinned.exit_code == 0, pinned.output

    for name in ("receipt.json", "receipt.pdf"):
        target = copy / "out" / name
        original = target.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        target.write_bytes(bytes(flipped))
        bad = runner.invoke(app, ["verify", str(copy / "out")])
        assert bad.exit_code == 4, bad.output
        assert name in bad.output
        target.write_bytes(original)


def test_verify_with_other_key_fails(failing_audit, tmp_path: Path) -> None:
    folder, _, _ = failing_audit
    other = tmp_path / "other.pem"
    assert runner.invoke(app, ["keygen", "--out", str(other)]).exit_code == 0
    bad = runner.invoke(app, ["verify", str(folder / "out"), "--key", str(tmp_path / "other.pub.pem")])
    assert bad.exit_code == 4, bad.output


def test_same_seed_same_numbers(failing_audit, tmp_path: Path) -> None:
    folder, run, _ = failing_audit
    again = _audit(run, "--key", str(folder / "key.pem"), "--out", str(tmp_path / "again"))
    assert again.exit_code == 1
    first = json.loads((folder / "out" / "receipt.json").read_text())
    second = json.loads((tmp_path / "again" / "receipt.json").read_text())
    for run_a, run_b in zip(first["runs"], second["runs"], strict=True):
        run_a.pop("seconds")
        run_b.pop("seconds")
        assert run_a == run_b
    assert first["seeds"] == second["seeds"]


def test_passing_gate_exits_zero(write_run) -> None:
    # Keeping every candidate (n = N) makes every selector's pool identical, so the
    # audited tail retention equals random's exactly and the gate must pass.
    run = write_run(loop={"select": 50, "candidates": 50})
    result = _audit(run)
    assert result.exit_code == 0, result.output
    assert "PASS tail_retention_vs_random" in result.output


def test_default_key_created_once(write_run, private_key_home: Path) -> None:
    run = write_run(loop={"select": 50, "candidates": 50, "rounds": 1})
    first = _audit(run)
    assert "created a new signing key" in first.output
    key = private_key_home / "signing-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    second = _audit(run)
    assert "created a new signing key" not in second.output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loop": {"rounds": 2, "selct": 10, "select": 10}}, "loop.selct: unknown key"),
        ({"target": {"source": "missing.npz"}}, "missing.npz: file not found"),
        ({"loop": {"select": 100, "candidates": 10}}, "select (n = 100) is larger than candidates"),
    ],
)
def test_invalid_input_exits_two_and_writes_nothing(write_run, overrides, message) -> None:
    run = write_run(**overrides)
    result = _audit(run)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (run.parent / "out").exists()


def test_invalid_input_keeps_previous_outputs(write_run) -> None:
    run = write_run(loop={"select": 50, "candidates": 50, "rounds": 1})
    assert _audit(run).exit_code == 0
    before = {p.name: p.read_bytes() for p in (run.parent / "out").iterdir()}
    bad = write_run(loop={"select": 100, "candidates": 10})
    assert _audit(bad).exit_code == 2
    after = {p.name: p.read_bytes() for p in (run.parent / "out").iterdir()}
    assert before == after


def test_output_path_is_file_exits_two(write_run, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    run = write_run(loop={"select": 50, "candidates": 50, "rounds": 1})
    result = _audit(run, "--out", str(blocker))
    assert result.exit_code == 2, result.output
    assert "is an existing file" in result.output


def test_unwritable_output_exits_two_before_work(write_run, tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    run = write_run(loop={"select": 50, "candidates": 50, "rounds": 1})
    result = _audit(run, "--out", str(locked / "out"))
    assert result.exit_code == 2, result.output


def test_internal_failure_exits_three(write_run, monkeypatch: pytest.MonkeyPatch) -> None:
    import selbias_audit.engine as engine

    def broken(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(engine, "run_all", broken)
    run = write_run(loop={"select": 50, "candidates": 50, "rounds": 1})
    result = _audit(run)
    assert result.exit_code == 3, result.output
    assert "simulated bug" in result.output


def test_verify_detects_changed_artifact(failing_audit, tmp_path: Path) -> None:
    import shutil

    folder, _, _ = failing_audit
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    csv = copy / "out" / "rounds.csv"
    csv.write_text(csv.read_text().replace("center_match", "centre_match"))
    bad = runner.invoke(app, ["verify", str(copy / "out")])
    assert bad.exit_code == 4, bad.output
    assert "rounds.csv" in bad.output


def test_bad_loglevel_falls_back(write_run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELBIAS_LOGLEVEL", "LOUD")
    run = write_run(loop={"select": 50, "candidates": 50, "rounds": 1})
    result = _audit(run)
    assert result.exit_code == 0, result.output
    assert "SELBIAS_LOGLEVEL" in result.output


def test_cuda_requested_without_gpu_exits_two(write_run) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = write_run(device="cuda")
    result = _audit(run)
    assert result.exit_code == 2
    assert "no CUDA device" in result.output


def test_verify_missing_envelope_exits_four(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 4


def test_verify_missing_key_or_root_exits_two(failing_audit, tmp_path: Path) -> None:
    folder, _, _ = failing_audit
    missing_key = runner.invoke(
        app, ["verify", str(folder / "out"), "--key", str(tmp_path / "nope.pem")]
    )
    assert missing_key.exit_code == 2
    assert "public key file not found" in missing_key.output
    missing_root = runner.invoke(
        app, ["verify", str(folder / "out"), "--inputs-root", str(tmp_path / "nothere")]
    )
    assert missing_root.exit_code == 2
    assert "folder not found" in missing_root.output


def test_verify_missing_path_exits_two(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", str(tmp_path / "no-such-folder")])
    assert result.exit_code == 2
    assert "no such file or folder" in result.output


def test_usage_error_exits_two() -> None:
    result = runner.invoke(app, ["audit"])
    assert result.exit_code == 2


def test_render_rebuilds_from_json(failing_audit, tmp_path: Path) -> None:
    folder, _, _ = failing_audit
    result = runner.invoke(app, ["render", str(folder / "out" / "receipt.json"), "--out",
                                 str(tmp_path)])
    assert result.exit_code == 0, result.output
    pdf = tmp_path / "receipt.rendered.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    html = (tmp_path / "receipt.rendered.html").read_text()
    assert "center_match[client 0]" in html


def test_render_rejects_invalid_receipt(tmp_path: Path) -> None:
    bad = tmp_path / "receipt.json"
    bad.write_text('{"schema_version": "1", "verdict": NaN}')
    result = runner.invoke(app, ["render", str(bad)])
    assert result.exit_code == 2
    assert "receipt.json" in result.output


def test_audit_notes_unconverged_solves(tmp_path: Path) -> None:
    import yaml

    from tests.conftest import small_run

    config = small_run()
    config["selection"]["compare"] = [{"method": "scheme1"}]
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump(config))
    result = _audit(run)
    assert result.exit_code in (0, 1), result.output
    # The published schedule ends after one iteration at the final blur, above tolerance.
    assert "OT solves of scheme1 ended above the marginal tolerance" in result.output
