"""Rebuild the PDF and HTML of a receipt from its JSON alone."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from selbias_audit.errors import SpecError, VerificationError
from selbias_audit.io import atomic_write_bytes, atomic_write_text
from selbias_audit.receipt.canonical import parse_json_strict
from selbias_audit.receipt.model import Receipt
from selbias_audit.render.html import render_html
from selbias_audit.render.pdf import render_pdf

# The signed receipt.pdf stays untouched: PDF bytes differ between renders (font
# subsetting), so overwriting it would break the envelope's digest.
SUFFIX = ".rendered"


def load_receipt(path: Path) -> Receipt:
    """Read and validate a receipt JSON file; raise SpecError naming the file and field."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: receipt not found") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read receipt ({exc.strerror})") from None
    try:
        raw = parse_json_strict(data, source=str(path))
    except VerificationError as exc:
        raise SpecError(exc.message) from None
    try:
        return Receipt.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise SpecError(
            f"{path}: not a valid receipt ({exc.error_count()} problem(s)); first: {where}: "
            f"{first['msg']}"
        ) from None


def rebuild(receipt_path: Path, out_dir: Path) -> list[Path]:
    """Render ``receipt_path`` to ``<name>.rendered.pdf`` and ``.html`` in ``out_dir``."""
    receipt = load_receipt(receipt_path)
    stem = receipt_path.stem + SUFFIX
    html = render_html(receipt)
    pdf = render_pdf(receipt)
    return [
        atomic_write_bytes(out_dir / f"{stem}.pdf", pdf),
        atomic_write_text(out_dir / f"{stem}.html", html),
    ]
