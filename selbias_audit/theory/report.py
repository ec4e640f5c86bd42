"""Output files of a theory run: CSV of every round, figures, JSON summary and PDF.

Every file is written to a temporary file in the output folder and then renamed, so a
reader never sees a half-written output. The JSON summary and the PDF are rendered
from the same summary values (:func:`~selbias_audit.theory.summary.theory_summary`).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from matplotlib.figure import Figure

from selbias_audit.errors import RunError
from selbias_audit.io import atomic_write_bytes
from selbias_audit.resources import template_dir
from selbias_audit.theory.run import TheoryResult
from selbias_audit.theory.summary import BAND, theory_summary

CSV_NAME = "runs.csv"
FIGURE_STEM = "trace_ratio"
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.pdf"
TEMPLATE_NAME = "theory.html.j2"

CSV_COLUMNS = (
    "seed",
    "setting",
    "round",
    "trace_ratio",
    "mean_error_sq",
    "w2",
    "biased_mean_error_sq",
)

_COLOURS = {
    "replace": "#1f5fbf",
    "replace_select": "#222222",
    "accumulate": "#8a3ea8",
    "accumulate_select": "#d62728",
}

# Fixed SVG ids and no timestamps, so the same run gives byte-identical figures.
_PLOT_RC = {"svg.hashsalt": "selbias-audit-theory", "font.size": 9.0}


def write_theory_outputs(result: TheoryResult, out_dir: str | Path) -> list[Path]:
    """Write the CSV, PNG and SVG figures, JSON summary and PDF report of ``result``.

    Parameters
    ----------
    result : TheoryResult
    out_dir : str or Path
        Created when missing. Existing files of the same names are replaced.

    Returns
    -------
    list of Path
        ``runs.csv``, ``trace_ratio.png``, ``trace_ratio.svg``, ``summary.json`` and
        ``report.pdf``, in that order.

    Raises
    ------
    RunError
        When WeasyPrint is missing or cannot lay out the report.
    """
    out_dir = Path(out_dir)
    summary = theory_summary(result)
    png, svg = trace_ratio_figure(result)
    # Everything is rendered before the first write, so a failing PDF leaves no partial
    # set of outputs behind.
    contents = {
        CSV_NAME: runs_csv(result).encode("utf-8"),
        f"{FIGURE_STEM}.png": png,
        f"{FIGURE_STEM}.svg": svg,
        SUMMARY_NAME: summary_json(summary).encode("utf-8"),
        REPORT_NAME: render_theory_pdf(summary, svg),
    }
    return [atomic_write_bytes(out_dir / name, data) for name, data in contents.items()]


def runs_csv(result: TheoryResult) -> str:
    """Return one CSV row per (seed, setting, round), rounds 0..T, with a header row.

    Floats are written with ``repr``, which round-trips float64 exactly.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for trace in result.settings:
        for seed_index, seed in enumerate(result.seeds):
            for t in result.rounds:
                writer.writerow(
                    (
                        seed,
                        trace.setting,
                        int(t),
                        repr(float(trace.trace_ratio[seed_index, t])),
                        repr(float(trace.mean_error_sq[seed_index, t])),
                        repr(float(trace.w2[seed_index, t])),
                        repr(float(trace.biased_mean_error_sq[seed_index, t])),
                    )
                )
    return buffer.getvalue()


def summary_json(summary: dict[str, Any]) -> str:
    """Serialise the summary as JSON. NaN or infinity raises ValueError instead of being written."""
    return json.dumps(summary, indent=2, allow_nan=False) + "\n"


def trace_ratio_figure(result: TheoryResult) -> tuple[bytes, bytes]:
    """Plot Tr(Sigma_t) / Tr(Sigma*) per setting and return the (PNG, SVG) bytes.

    Each line is the mean across seeds, and the shaded band spans the minimum to the
    maximum across seeds. A band of mean +- SEM can reach zero or below, which a log
    axis cannot show.
    """
    rounds = result.rounds
    with matplotlib.rc_context(_PLOT_RC):
        figure = Figure(figsize=(7.0, 4.4), layout="constrained")
        axes = figure.add_subplot()
        for trace in result.settings:
            colour = _COLOURS.get(trace.setting, "#555555")
            ratios = trace.trace_ratio
            axes.fill_between(
                rounds, ratios.min(axis=0), ratios.max(axis=0), color=colour, alpha=0.18,
                linewidth=0,
            )
            axes.plot(rounds, ratios.mean(axis=0), color=colour, linewidth=1.8, label=trace.label)
        axes.axhline(1.0, color="#777777", linestyle=":", linewidth=1.0)
        axes.set_yscale("log")
        axes.set_xlim(rounds[0], rounds[-1])
        axes.set_xlabel("round t")
        axes.set_ylabel(r"$\mathrm{Tr}(\Sigma_t)\ /\ \mathrm{Tr}(\Sigma^*)$")
        axes.set_title(
            f"Covariance trace ratio: mean of {len(result.seeds)} seeds, band = {BAND}"
        )
        axes.grid(True, which="major", alpha=0.3)
        figure.legend(loc="outside lower center", ncols=len(result.settings), frameon=False)

        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=160, metadata={"Software": None})
        svg = io.BytesIO()
        figure.savefig(svg, format="svg", metadata={"Date": None})
    return png.getvalue(), svg.getvalue()


def render_theory_html(summary: dict[str, Any], svg: bytes) -> str:
    """Render the report page from the summary, with the SVG figure as a data URI."""
    environment = Environment(
        loader=FileSystemLoader(template_dir()),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = _format_number
    template = environment.get_template(TEMPLATE_NAME)
    figure_uri = "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")
    return template.render(summary=summary, figure_uri=figure_uri)


def render_theory_pdf(summary: dict[str, Any], svg: bytes) -> bytes:
    """Render the report page as PDF bytes with WeasyPrint.

    Raises
    ------
    RunError
        When WeasyPrint is not importable or fails to lay out the page.
    """
    from selbias_audit.render.pdf import html_to_pdf

    return html_to_pdf(render_theory_html(summary, svg), "the theory report")


def _format_number(value: float | int | None, digits: int = 3) -> str:
    """Format a number with ``digits`` significant digits, and None as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, int | np.integer):
        return str(value)
    return f"{value:.{digits}g}"
