"""Rendering of receipts: PDF smoke test, HTML golden file, escaping and figures."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import pypdf
import pytest

from selbias_audit.receipt.model import Governance
from selbias_audit.render.context import glossary, missing_facts, title_of
from selbias_audit.render.html import render_html
from selbias_audit.render.pdf import render_pdf
from selbias_audit.render.plots import all_plots
from selbias_audit.resources import template_dir
from tests.receipt_factory import make_receipt

ASSETS = Path(__file__).resolve().parent / "assets"
assert ASSETS.is_dir(), f"test assets folder missing at {ASSETS}"
GOLDEN_HTML = ASSETS / "receipt.golden.html"
MISSING = {"status": "missing", "value": None}


def _pdf_text(reader: pypdf.PdfReader) -> str:
    # Joining lines lets a check find a title that the layout wrapped.
    text = "\n".join(page.extract_text() for page in reader.pages)
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    """Render one PDF whose pooling restriction is missing; WeasyPrint takes seconds."""
    receipt = make_receipt(governance__pooling_restriction=MISSING)
    pdf = render_pdf(receipt)
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return {"receipt": receipt, "pdf": pdf, "reader": reader, "text": _pdf_text(reader)}


def test_pdf_is_a_pdf(rendered: dict[str, Any]) -> None:
    assert rendered["pdf"].startswith(b"%PDF-")
    # Verdict page, figures, governance, modes, signature, limits and glossary.
    assert len(rendered["reader"].pages) >= 8
    assert rendered["reader"].metadata.title == "Selection-bias receipt: digits-local-verifier"


def test_pdf_first_page_has_verdict(rendered: dict[str, Any]) -> None:
    first = re.sub(r"\s+", " ", rendered["reader"].pages[0].extract_text())
    assert "FAIL" in first
    assert rendered["receipt"].verdict.summary in first
    assert "tail_retention_vs_random" in first
    assert "Audited selector local_sinkhorn[client 0]" in first
    assert "keeps n = 50 of N = 200" in first
    assert "1. Selectors compared" in first


@pytest.mark.parametrize("name", list(Governance.model_fields))
def test_pdf_shows_governance_title(rendered: dict[str, Any], name: str) -> None:
    assert title_of(name) in rendered["text"]


def test_pdf_marks_missing_fact(rendered: dict[str, Any]) -> None:
    text = rendered["text"]
    section = text[text.index("Pooling restriction Reason raw data") :][:200]
    assert "MISSING The user did not provide this fact" in section
    assert "pooling_restriction" in text[: text.index("1. Selectors compared")]


def test_pdf_has_signature_and_limits(rendered: dict[str, Any]) -> None:
    text = rendered["text"]
    assert rendered["receipt"].signing_key_id in text
    assert "Ed25519" in text
    assert "https://selbias-audit.dev/selection-bias-receipt/v1" in text
    assert "What a receipt does and does not prove" in text
    assert "must not" in text


def test_pdf_glossary_has_field_descriptions(rendered: dict[str, Any]) -> None:
    for model in glossary():
        for _, description in model["fields"]:
            assert re.sub(r"\s+", " ", description) in rendered["text"]


def _strip_svg(html: str) -> str:
    # Figures depend on the matplotlib version, so the golden file has placeholders.
    return re.sub(r"<svg.*?</svg>", "<svg>figure</svg>", html, flags=re.DOTALL)


def test_html_golden() -> None:
    """The HTML of the factory receipt, figures aside, matches the pinned file.

    After an intended change, regenerate with ``SELBIAS_UPDATE_GOLDEN=1`` and review the diff.
    """
    html = _strip_svg(render_html(make_receipt()))
    if os.environ.get("SELBIAS_UPDATE_GOLDEN"):
        GOLDEN_HTML.write_text(html, encoding="utf-8")
    assert html == GOLDEN_HTML.read_text(encoding="utf-8")


def test_html_structure() -> None:
    html = render_html(make_receipt())
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<svg") == 5
    assert "<?xml" not in html
    assert html.index('class="verdict-word"') < html.index('id="comparison"')
    assert html.index('id="comparison"') < html.index('id="figures"')
    assert html.index('id="figures"') < html.index('id="governance"')
    for name in Governance.model_fields:
        assert f'id="gov-{name}"' in html


def test_html_escapes_receipt_strings() -> None:
    runs = make_receipt().model_dump(mode="python")["runs"]
    runs[-1]["label"] = "<script>alert(1)</script>"
    receipt = make_receipt(run_name="a<b>&c", runs=runs)
    html = render_html(receipt)
    assert "<script>" not in html
    assert "a<b>" not in html
    assert "a&lt;b&gt;&amp;c" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_html_pass_verdict() -> None:
    verdict = make_receipt().verdict.model_dump()
    verdict["passed"] = True
    html = render_html(make_receipt(verdict=verdict))
    assert '<div class="verdict-word">PASS</div>' in html
    assert 'class="verdict pass"' in html


def test_html_states_counterfactual() -> None:
    note = "baselines were applied to the 3 logged candidate pools"
    html = render_html(make_receipt(counterfactual_note=note))
    assert "Counterfactual replay." in html
    assert note in html
    assert html.index("Counterfactual replay.") < html.index('class="grid comparison"')


def test_missing_facts_lists_paths() -> None:
    receipt = make_receipt(governance__pooling_restriction=MISSING)
    assert missing_facts(receipt) == [
        "pooling_restriction",
        "code_revision.pipeline_revision",
        "licenses.model",
    ]


def test_plots_are_vector_and_deterministic() -> None:
    receipt = make_receipt()
    first = all_plots(receipt)
    second = all_plots(receipt)
    assert [plot.svg for plot in first] == [plot.svg for plot in second]
    for plot in first:
        assert plot.svg.startswith("<svg")
        assert "<image" not in plot.svg
        assert "round" in plot.svg or plot.key == "partition"
    assert "scheme1 round 2: non finite" in first[2].caption


def test_template_dir_has_templates() -> None:
    assert (template_dir() / "receipt.html.j2").is_file()
    assert (template_dir() / "receipt.css").is_file()
