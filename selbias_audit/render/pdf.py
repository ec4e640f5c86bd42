"""PDF rendering of a receipt with WeasyPrint, from the same HTML as :mod:`.html`."""

from __future__ import annotations

from selbias_audit.errors import RunError
from selbias_audit.receipt.model import Receipt
from selbias_audit.render.html import render_html
from selbias_audit.resources import template_dir


def html_to_pdf(html: str, what: str) -> bytes:
    """Lay out a self-contained HTML page as PDF bytes with WeasyPrint.

    ``what`` names the document in error messages, for example ``"the PDF receipt"``.
    Raises RunError (exit code 3) when WeasyPrint is missing or the layout fails.
    """
    try:
        import weasyprint
    except ImportError as error:
        raise RunError(
            f"cannot render {what} because WeasyPrint is not importable: {error}",
            hint="install WeasyPrint and its system libraries (Pango), or skip the PDF",
        ) from error
    try:
        document = weasyprint.HTML(string=html, base_url=str(template_dir())).render()
        return document.write_pdf()
    # WeasyPrint documents no exception hierarchy, and a layout failure must end the
    # run with a run error (exit code 3), not a traceback.
    except Exception as error:  # noqa: BLE001
        raise RunError(f"cannot render {what}: {type(error).__name__}: {error}") from error


def render_pdf(receipt: Receipt) -> bytes:
    """Render ``receipt`` as a PDF document.

    The page layout comes from the print rules in ``receipt.css`` (A4, page numbers,
    page breaks before the major sections). Figures stay vector graphics.

    Parameters
    ----------
    receipt : Receipt
        A validated receipt.

    Returns
    -------
    bytes
        The PDF file's contents.

    Raises
    ------
    RunError
        If WeasyPrint is not installed or fails to lay out the document.
    """
    return html_to_pdf(render_html(receipt), "the PDF")
