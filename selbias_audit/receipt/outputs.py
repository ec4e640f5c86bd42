"""Writing the signed output bundle of an audit, all or nothing.

Every file is rendered and signed in a temporary folder inside the output folder (so on
the same file system), then moved into place with ``os.replace``. If anything fails
before the move, the previous outputs stay untouched and no partial file is left. If a
move itself fails, the files already replaced are restored from hard links (or copies)
of the previous versions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from selbias_audit.errors import RunError
from selbias_audit.receipt.canonical import canonical_bytes
from selbias_audit.receipt.envelope import (
    ENVELOPE_NAME,
    Subject,
    build_statement,
    sign_statement,
)
from selbias_audit.receipt.keys import key_id
from selbias_audit.receipt.model import Receipt

RECEIPT_NAME = "receipt.json"
PDF_NAME = "receipt.pdf"
HTML_NAME = "receipt.html"
_ALL_NAMES = (RECEIPT_NAME, PDF_NAME, HTML_NAME, ENVELOPE_NAME)


@dataclass(frozen=True)
class WrittenOutputs:
    """Paths of the files that :func:`write_outputs` wrote."""

    receipt_json: Path
    envelope: Path
    pdf: Path | None
    html: Path | None

    def paths(self) -> list[Path]:
        """Return every written path, the envelope last."""
        optional = [path for path in (self.pdf, self.html) if path is not None]
        return [self.receipt_json, *optional, self.envelope]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise RunError(f"cannot read {path} to hash it: {error.strerror}") from None
    return digest.hexdigest()


def _relative_name(path: Path, start: Path) -> str:
    """Return ``path`` relative to ``start`` as a POSIX path (``..`` allowed)."""
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:
        # os.path.relpath raises this on Windows when the two are on different drives.
        raise RunError(
            f"cannot name {path} relative to the output folder {start}",
            hint="keep the inputs and the output folder on the same drive",
        ) from None


def _input_subjects(
    receipt: Receipt, out_dir: Path, run_description: Path, inputs: list[Path]
) -> list[Subject]:
    """Hash the run description and the inputs, checking them against the receipt."""
    files: dict[Path, None] = {run_description.resolve(): None}
    files.update((Path(path).resolve(), None) for path in inputs)
    subjects = []
    for path in files:
        if path.parent == out_dir and path.name in _ALL_NAMES:
            raise RunError(f"input {path} would be overwritten by an output of the same name")
        subjects.append(Subject(_relative_name(path, out_dir), _sha256_file(path)))

    # N.B.: the receipt lists the digests the audit read. A file that changed since
    # then, or a list that differs, would make the signature vouch for other bytes.
    expected = {receipt.run_description.sha256} | {item.sha256 for item in receipt.inputs}
    found = {subject.sha256 for subject in subjects}
    if expected != found:
        problems = [
            f"{subject.name} (sha256 {subject.sha256[:12]}) is not listed in the receipt"
            for subject in subjects
            if subject.sha256 not in expected
        ]
        problems += [
            f"the receipt lists sha256 {digest[:12]}, which no given file has"
            for digest in sorted(expected - found)
        ]
        raise RunError(
            "the run description and input files do not match the receipt: "
            + "; ".join(problems),
            hint="an input changed during the audit, or the input list differs; rerun the audit",
        )
    return subjects


def _render_outputs(receipt: Receipt, staging: Path, *, pdf: bool, html: bool) -> dict[str, bytes]:
    """Render every output of the bundle except the envelope."""
    contents = {RECEIPT_NAME: canonical_bytes(receipt)}
    if pdf:
        from selbias_audit.render.pdf import render_pdf

        contents[PDF_NAME] = render_pdf(receipt)
    if html:
        from selbias_audit.render.html import render_html

        contents[HTML_NAME] = render_html(receipt).encode("utf-8")
    for name, data in contents.items():
        _write_synced(staging / name, data)
    return contents


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _keep_previous(target: Path, backup: Path) -> bool:
    """Link or copy ``target`` to ``backup``, leaving ``target`` in place.

    Returns False, and does nothing, when ``target`` does not exist.
    """
    if not target.exists():
        return False
    try:
        os.link(target, backup)
    except OSError:
        shutil.copy2(target, backup)
    return True


def _commit(staging: Path, out_dir: Path, names: list[str], stale: list[str]) -> None:
    """Move the staged files into ``out_dir`` and remove stale outputs, or undo it all."""
    backups = staging / ".previous"
    backups.mkdir()
    had_previous = {
        name: _keep_previous(out_dir / name, backups / name) for name in [*names, *stale]
    }
    done: list[str] = []
    try:
        for name in stale:
            if had_previous[name]:
                (out_dir / name).unlink()
                done.append(name)
        # The envelope is moved last, so that a reader never sees a new envelope next
        # to old subject files.
        for name in names:
            os.replace(staging / name, out_dir / name)
            done.append(name)
    except OSError as error:
        for name in reversed(done):
            if had_previous[name]:
                os.replace(backups / name, out_dir / name)
            else:
                (out_dir / name).unlink(missing_ok=True)
        raise RunError(f"cannot move outputs into {out_dir}: {error.strerror}") from None
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_outputs(
    receipt: Receipt,
    out_dir: Path,
    *,
    run_description: Path,
    inputs: list[Path],
    private_key: Ed25519PrivateKey,
    pdf: bool = True,
    html: bool = False,
) -> WrittenOutputs:
    """Write the receipt, its renderings and the signed envelope into ``out_dir``.

    Writes ``receipt.json`` (canonical bytes), ``receipt.pdf`` when ``pdf`` is set,
    ``receipt.html`` when ``html`` is set, and ``receipt.intoto.dsse.json``. An output
    of a previous run that this call does not write (a PDF or HTML) is removed, so the
    folder never mixes files of two runs.

    Parameters
    ----------
    receipt : Receipt
        The receipt. Its ``signing_key_id`` must be the key id of ``private_key``.
    out_dir : Path
        Output folder, created if missing.
    run_description : Path
        The run description file the audit read.
    inputs : list[Path]
        Every other input file the audit read.
    private_key : Ed25519PrivateKey
        The signing key.
    pdf, html : bool
        Render the PDF and the HTML.

    Returns
    -------
    WrittenOutputs
        Paths of the written files.

    Raises
    ------
    NonFiniteError
        If the receipt contains NaN or infinity. Nothing is written.
    RunError
        If the receipt names another signing key, the files do not match the digests in
        the receipt, rendering fails, or a file cannot be written. Previous outputs are
        left as they were.
    """
    signer_id = key_id(private_key.public_key())
    if receipt.signing_key_id != signer_id:
        raise RunError(
            f"the receipt names signing key {receipt.signing_key_id[:12]}..., "
            f"but the key given has id {signer_id[:12]}...",
            hint="fill signing_key_id from the key that signs the outputs",
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create output folder {out_dir}: {error.strerror}") from None
    out_dir = out_dir.resolve()
    input_subjects = _input_subjects(receipt, out_dir, Path(run_description), inputs)

    staging = Path(tempfile.mkdtemp(prefix=".selbias-staging-", dir=out_dir))
    try:
        contents = _render_outputs(receipt, staging, pdf=pdf, html=html)
        output_subjects = [
            Subject(name, hashlib.sha256(data).hexdigest()) for name, data in contents.items()
        ]
        statement = build_statement(
            receipt,
            [*output_subjects, *input_subjects],
            public_key=private_key.public_key(),
            receipt_name=RECEIPT_NAME,
            outputs=list(contents),
            run_description_name=input_subjects[0].name,
            inputs_root_name=_relative_name(Path(run_description).resolve().parent, out_dir),
        )
        _write_synced(staging / ENVELOPE_NAME, sign_statement(statement, private_key))
        stale = [name for name in (PDF_NAME, HTML_NAME) if name not in contents]
        _commit(staging, out_dir, [*contents, ENVELOPE_NAME], stale)
    except OSError as error:
        raise RunError(f"cannot write outputs in {out_dir}: {error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    return WrittenOutputs(
        receipt_json=out_dir / RECEIPT_NAME,
        envelope=out_dir / ENVELOPE_NAME,
        pdf=out_dir / PDF_NAME if pdf else None,
        html=out_dir / HTML_NAME if html else None,
    )
