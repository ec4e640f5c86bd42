"""HTML rendering of a receipt, the source of the PDF as well.

The page is built from the receipt alone with the jinja2 template
``receipt.html.j2`` in the template folder. Autoescaping is on, so every string that
comes from the receipt is escaped, and undefined template variables raise instead of
printing nothing. The stylesheet and the figures are inlined, so the HTML is one
self-contained file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from selbias_audit.receipt.envelope import ENVELOPE_NAME, PAYLOAD_TYPE, SIGNATURE_ALGORITHM
from selbias_audit.receipt.model import PREDICATE_TYPE, SAMPLE_METRICS, Receipt
from selbias_audit.render import context
from selbias_audit.render.plots import all_plots
from selbias_audit.resources import template_dir

TEMPLATE_NAME = "receipt.html.j2"
STYLESHEET_NAME = "receipt.css"

_REASONS = {
    "globally_rare": "globally rare: among the rarest modes that together hold the tail "
    "share of the target mass",
    "underrepresented_by_verifier": "under-represented by the audited verifier's reference",
}
_TABLE_METRICS = ("tail_retention", "trace_ratio", "frechet_distance", "sinkhorn_divergence")


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(template_dir()),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _metric_headers(receipt: Receipt) -> dict[str, dict[str, str]]:
    """Return the column header, unit and direction of each comparison-table metric."""
    return _headers(receipt, _TABLE_METRICS)


def _headers(receipt: Receipt, names: Sequence[str]) -> dict[str, dict[str, str]]:
    """Return the column header, unit and direction of each named metric."""
    definitions = {definition.name: definition for definition in receipt.metrics}
    headers = {}
    for name in names:
        definition = definitions.get(name)
        if definition is None:
            headers[name] = {"title": context.title_of(name), "unit": "", "direction": ""}
            continue
        if definition.ideal is not None:
            direction = f"closest to {definition.ideal:g} is best"
        elif definition.higher_is_better:
            direction = "higher is better"
        else:
            direction = "lower is better"
        headers[name] = {
            "title": context.title_of(name),
            "unit": definition.unit,
            "direction": direction,
        }
    return headers


def _tail_modes(receipt: Receipt) -> list[dict[str, str]]:
    rows = []
    for mode in receipt.modes.tail:
        reasons = []
        for reason in mode.reasons:
            text = _REASONS.get(reason, reason)
            if reason == "underrepresented_by_verifier" and mode.reference_share is not None:
                text += f" (reference share {mode.reference_share:.3g})"
            reasons.append(text)
        reference = "not known" if mode.reference_share is None else f"{mode.reference_share:.3g}"
        rows.append(
            {
                "mode": str(mode.mode),
                "name": mode.name,
                "target_share": f"{mode.target_share:.3g}",
                "reference_share": reference,
                "reasons": "; ".join(reasons) or "no reason recorded",
            }
        )
    return rows


def _files(receipt: Receipt) -> list[dict[str, str]]:
    entries = [receipt.run_description, *receipt.inputs, *receipt.governance.artifacts]
    kinds = (
        ["run description"]
        + ["input"] * len(receipt.inputs)
        + ["artifact"] * len(receipt.governance.artifacts)
    )
    return [
        {"kind": kind, "path": item.path, "role": item.role, "sha256": item.sha256}
        for kind, item in zip(kinds, entries, strict=True)
    ]


def build_context(receipt: Receipt) -> dict[str, Any]:
    """Return every value the template uses, derived from ``receipt`` only."""
    governance = receipt.governance
    budget = governance.selection_budget
    # N.B.: matplotlib's SVG writer escapes the receipt strings it draws, so the SVG is
    # marked safe. Every other receipt string is escaped by the template.
    plots = [
        {"key": plot.key, "title": plot.title, "caption": plot.caption, "svg": Markup(plot.svg)}
        for plot in all_plots(receipt)
    ]
    return {
        "receipt": receipt,
        "verdict_word": "PASS" if receipt.verdict.passed else "FAIL",
        "budget": f"keeps n = {budget.select} of N = {budget.candidates} candidates per round "
        f"(ratio {budget.ratio:.3g})",
        "metric_headers": _metric_headers(receipt),
        "comparison": context.comparison_rows(receipt),
        "sample_metrics": context.sample_metric_rows(receipt),
        "sample_headers": _headers(receipt, SAMPLE_METRICS),
        "plots": plots,
        "governance": context.governance_entries(receipt),
        "missing_facts": context.missing_facts(receipt),
        "tail_modes": _tail_modes(receipt),
        "mode_names": receipt.modes.names,
        "target_shares": governance.target_distribution.mode_shares,
        "solver_health": context.solver_health_rows(receipt.runs),
        "environment": context.display_value(governance.compute_environment),
        "code_revision": context.display_value(governance.code_revision),
        "seeds": context.display_value(receipt.seeds),
        "files": _files(receipt),
        "signature": {
            "key_id": receipt.signing_key_id,
            "algorithm": SIGNATURE_ALGORITHM,
            "predicate_type": PREDICATE_TYPE,
            "payload_type": PAYLOAD_TYPE,
            "envelope": ENVELOPE_NAME,
        },
        "glossary": context.glossary(),
    }


def render_html(receipt: Receipt) -> str:
    """Render ``receipt`` as a self-contained HTML page.

    Parameters
    ----------
    receipt : Receipt
        A validated receipt.

    Returns
    -------
    str
        The HTML document, with the stylesheet and the SVG figures inlined.
    """
    environment = _environment()
    template = environment.get_template(TEMPLATE_NAME)
    # The stylesheet ships with the package, so it is marked safe as well.
    stylesheet = Markup((template_dir() / STYLESHEET_NAME).read_text(encoding="utf-8"))
    return template.render(stylesheet=stylesheet, **build_context(receipt))
