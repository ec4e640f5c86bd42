"""Figures of the receipt as SVG strings, drawn from the receipt alone.

Every figure uses matplotlib's object API (no pyplot, so no global figure state and no
GUI backend) and is saved as SVG with text kept as text, so the PDF stays vector and its
labels stay searchable. Each selector keeps one color in every figure: the audited
selector red, the random baseline grey, the other baselines a fixed palette in the
order the receipt lists them.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from selbias_audit.receipt.model import MetricValue, Receipt, SelectorRun

AUDITED_COLOR = "#c0392b"
RANDOM_COLOR = "#6f6f6f"
BASELINE_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#bcbd22")
MODE_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
               "#ccb974", "#64b5cd", "#c44e52")
# Beyond ten modes the palette comes from tab20, and beyond twenty colors repeat, so the
# legend and the hatching of tail modes are what tell modes apart.
_MANY_MODES = 10
# Larger heat maps drop the printed value in each cell, which would be unreadable.
_MAX_ANNOTATED_CELLS = 160

# svg.hashsalt fixes the ids matplotlib generates, so equal receipts give equal SVG.
_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "selbias-audit",
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
}


@dataclass(frozen=True)
class Plot:
    """One figure: a title, a caption that explains how to read it, and the SVG markup."""

    key: str
    title: str
    caption: str
    svg: str


@dataclass(frozen=True)
class SelectorGroup:
    """Runs shown as one series: one run, or every seed of the random baseline."""

    label: str
    role: str
    color: str
    runs: tuple[SelectorRun, ...]


def selector_groups(receipt: Receipt) -> list[SelectorGroup]:
    """Group the runs into series: audited first, then baselines, then random."""
    audited = [run for run in receipt.runs if run.role == "audited"]
    baselines = [run for run in receipt.runs if run.role == "baseline"]
    randoms = tuple(run for run in receipt.runs if run.role == "random")
    groups = [SelectorGroup(run.label, "audited", AUDITED_COLOR, (run,)) for run in audited]
    for index, run in enumerate(baselines):
        color = BASELINE_COLORS[index % len(BASELINE_COLORS)]
        groups.append(SelectorGroup(run.label, "baseline", color, (run,)))
    if randoms:
        label = f"random ({len(randoms)} seeds)"
        groups.append(SelectorGroup(label, "random", RANDOM_COLOR, randoms))
    return groups


def _unit(receipt: Receipt, metric: str) -> str:
    """Return the unit the receipt declares for ``metric``, or an empty string."""
    for definition in receipt.metrics:
        if definition.name == metric:
            return definition.unit
    return ""


def _axis_label(name: str, unit: str) -> str:
    # The unit goes on its own wrapped lines, so that it does not run past the figure.
    return f"{name}\n" + textwrap.fill(f"({unit})", width=30) if unit else name


@contextmanager
def _figure(width: float, height: float) -> Iterator[Figure]:
    with matplotlib.rc_context(_RC):
        yield Figure(figsize=(width, height), layout="constrained")


def _to_svg(figure: Figure) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    # Inline SVG in HTML must not carry an XML declaration or a DOCTYPE.
    return text[text.index("<svg") :]


def _value(metric: MetricValue) -> float:
    return metric.value if metric.status == "ok" and metric.value is not None else math.nan


def _series(run: SelectorRun, metric: str) -> tuple[list[int], list[float]]:
    rounds = [item.round for item in run.rounds]
    values: list[float] = []
    for item in run.rounds:
        raw = getattr(item, metric)
        values.append(_value(raw) if isinstance(raw, MetricValue) else float(raw))
    return rounds, values


def _random_labels(count: int) -> tuple[str, str]:
    return f"random ({count} seeds), min-max", f"random ({count} seeds), mean"


def _draw_metric(axes: Axes, groups: list[SelectorGroup], metric: str) -> list[str]:
    """Draw one line per group, and the random seeds as mean line and min-max band.

    Returns a note for every point that is missing because its status is not ``ok``.
    """
    notes: list[str] = []
    for group in groups:
        all_series = [_series(run, metric) for run in group.runs]
        for run in group.runs:
            for item in run.rounds:
                raw = getattr(item, metric)
                if isinstance(raw, MetricValue) and raw.status != "ok":
                    notes.append(f"{run.label} round {item.round}: {raw.status.replace('_', ' ')}")
        rounds = all_series[0][0]
        if group.role != "random":
            axes.plot(rounds, all_series[0][1], marker="o", markersize=3.5, color=group.color,
                      linewidth=1.8 if group.role == "audited" else 1.3, label=group.label)
            continue
        columns = list(zip(*(values for _, values in all_series), strict=True))
        finite = [[v for v in column if not math.isnan(v)] for column in columns]
        mean = [sum(c) / len(c) if c else math.nan for c in finite]
        low = [min(c) if c else math.nan for c in finite]
        high = [max(c) if c else math.nan for c in finite]
        band_label, mean_label = _random_labels(len(group.runs))
        axes.fill_between(rounds, low, high, color=group.color, alpha=0.22, linewidth=0,
                          label=band_label)
        axes.plot(rounds, mean, linestyle="--", color=group.color, linewidth=1.3,
                  label=mean_label)
    return notes


def _set_round_ticks(axes: Axes, rounds: list[int]) -> None:
    # One tick per round while they fit, else integer ticks that matplotlib spaces out.
    if len(rounds) <= 12:
        axes.set_xticks(rounds)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("round")


def _round_axis(axes: Axes, receipt: Receipt) -> None:
    _set_round_ticks(axes, sorted({item.round for run in receipt.runs for item in run.rounds}))


def _legend(figure: Figure, axes: Axes) -> None:
    figure.legend(*axes.get_legend_handles_labels(), loc="outside right upper", fontsize=7.5)


def tail_retention_plot(receipt: Receipt) -> Plot:
    """Plot tail retention per round, with the random baseline's min-max band and mean."""
    groups = selector_groups(receipt)
    with _figure(6.6, 2.5) as figure:
        axes = figure.add_subplot()
        _draw_metric(axes, [g for g in groups if g.role != "random"], "tail_retention")
        if receipt.random_band:
            # The band stored in the receipt is the one the gate used, so draw it as stored.
            band = receipt.random_band
            seeds = sum(run.role == "random" for run in receipt.runs)
            band_label, mean_label = _random_labels(seeds)
            rounds = [item.round for item in band]
            axes.fill_between(rounds, [b.min for b in band], [b.max for b in band],
                              color=RANDOM_COLOR, alpha=0.22, linewidth=0, label=band_label)
            axes.plot(rounds, [b.mean for b in band], linestyle="--", color=RANDOM_COLOR,
                      linewidth=1.3, label=mean_label)
        axes.set_ylim(0.0, 1.05)
        axes.set_ylabel(_axis_label("tail retention", _unit(receipt, "tail_retention")))
        _round_axis(axes, receipt)
        _legend(figure, axes)
        svg = _to_svg(figure)
    caption = (
        "Share of the target's tail-mode mass that the training pool keeps, each mode capped "
        "at its target share: 1 means the tail is intact, 0 means it is gone. The grey band "
        "spans the random baseline's seeds."
    )
    return Plot("tail_retention", "Tail retention per round", caption, svg)


def _metric_plot(receipt: Receipt, metric: str, name: str, title: str, caption: str) -> Plot:
    with _figure(6.6, 2.3) as figure:
        axes = figure.add_subplot()
        notes = _draw_metric(axes, selector_groups(receipt), metric)
        axes.set_ylabel(_axis_label(name, _unit(receipt, metric)))
        axes.set_ylim(bottom=0.0)
        _round_axis(axes, receipt)
        _legend(figure, axes)
        svg = _to_svg(figure)
    if notes:
        caption += " Points not shown: " + "; ".join(notes) + "."
    return Plot(metric, title, caption, svg)


def trace_ratio_plot(receipt: Receipt) -> Plot:
    """Plot the covariance trace ratio of the training pool per round."""
    caption = (
        "Tr(Sigma_pool) / Tr(Sigma_target): below 1 the pool is less spread out than the "
        "target. A steady decline is the diversity collapse that selection can cause."
    )
    return _metric_plot(receipt, "trace_ratio", "trace ratio", "Covariance trace ratio per round",
                        caption)


def frechet_plot(receipt: Receipt) -> Plot:
    """Plot the Frechet distance between the training pool and the target per round."""
    caption = (
        "Frechet distance between Gaussian fits of the pool and of the target "
        "(lower is closer)."
    )
    return _metric_plot(receipt, "frechet_distance", "Frechet distance",
                        "Frechet distance to the target per round", caption)


def _mode_colors(count: int) -> list[str]:
    if count <= _MANY_MODES:
        return list(MODE_COLORS[:count])
    palette = matplotlib.colormaps["tab20"].colors
    return [to_hex(palette[m % len(palette)]) for m in range(count)]


def _mode_labels(receipt: Receipt) -> list[str]:
    tail = {mode.mode for mode in receipt.modes.tail}
    return [f"{name} (tail)" if index in tail else name
            for index, name in enumerate(receipt.modes.names)]


def _random_mean_shares(runs: list[SelectorRun]) -> tuple[list[int], list[list[float]]]:
    rounds = [item.round for item in runs[0].rounds]
    shares = []
    for index in range(len(rounds)):
        per_run = [run.rounds[index].pool_mode_shares for run in runs]
        shares.append([sum(column) / len(per_run) for column in zip(*per_run, strict=True)])
    return rounds, shares


def mode_shares_plot(receipt: Receipt) -> Plot:
    """Plot the training pool's mode shares over rounds for the audited selector and random."""
    audited = [run for run in receipt.runs if run.role == "audited"]
    randoms = [run for run in receipt.runs if run.role == "random"]
    panels: list[tuple[str, list[int], list[list[float]]]] = []
    for run in audited:
        panels.append((run.label, [r.round for r in run.rounds],
                       [r.pool_mode_shares for r in run.rounds]))
    if randoms:
        rounds, shares = _random_mean_shares(randoms)
        panels.append((f"random (mean of {len(randoms)} seeds)", rounds, shares))
    tail = {mode.mode for mode in receipt.modes.tail}
    labels = _mode_labels(receipt)
    with _figure(6.6, 2.5) as figure:
        axes_list = figure.subplots(1, max(len(panels), 1), sharey=True, squeeze=False)[0]
        for axes, (title, rounds, shares) in zip(axes_list, panels, strict=False):
            by_mode = list(zip(*shares, strict=True))
            colors = _mode_colors(len(by_mode))
            hatches = ["////" if m in tail else "" for m in range(len(by_mode))]
            axes.stackplot(rounds, by_mode, labels=labels, colors=colors, hatch=hatches,
                           edgecolor="white", linewidth=0.4)
            axes.set_title(title, fontsize=8.5)
            _set_round_ticks(axes, rounds)
            axes.set_ylim(0.0, 1.0)
            axes.grid(False)
        axes_list[0].set_ylabel("share of the training pool\n(fraction)")
        _legend(figure, axes_list[0])
        svg = _to_svg(figure)
    caption = (
        "Mode shares of the training pool after each round. Hatched areas are tail modes. "
        "A tail area that thins for the audited selector but not for random selection is the "
        "erosion the gate tests for."
    )
    return Plot("mode_shares", "Mode shares of the training pool", caption, svg)


def partition_heatmap(receipt: Receipt) -> Plot:
    """Draw a clients × modes heat map of the reference partition, with the global shares."""
    references = receipt.governance.local_references
    rows = [receipt.governance.target_distribution.mode_shares]
    rows += [reference.mode_shares for reference in references]
    row_labels = ["global (target)"] + [f"client {r.client} (n={r.size})" for r in references]
    labels = _mode_labels(receipt)
    annotate = len(rows) * len(labels) <= _MAX_ANNOTATED_CELLS
    with _figure(6.6, min(0.9 + 0.32 * len(rows), 8.0)) as figure:
        axes = figure.add_subplot()
        vmax = max((share for row in rows for share in row), default=0.0) or 1.0
        # pcolormesh keeps the cells as vector shapes, where imshow would embed a PNG.
        # Matplotlib rasterizes a color bar of 50 or more levels, so use 20.
        image = axes.pcolormesh(rows, cmap=matplotlib.colormaps["Blues"].resampled(20),
                                vmin=0.0, vmax=vmax, edgecolors="white", linewidth=0.5)
        axes.set_xlim(0, len(labels))
        axes.set_ylim(len(rows), 0)
        for i, row in enumerate(rows if annotate else []):
            for j, share in enumerate(row):
                color = "white" if share > 0.6 * vmax else "black"
                axes.text(j + 0.5, i + 0.5, f"{share:.2f}", ha="center", va="center",
                          fontsize=7.5, color=color)
        rotation = 0 if len(labels) <= 6 else 35
        axes.set_xticks([j + 0.5 for j in range(len(labels))], labels, rotation=rotation,
                        ha="center" if rotation == 0 else "right")
        axes.set_yticks([i + 0.5 for i in range(len(row_labels))], row_labels)
        axes.axhline(1.0, color="black", linewidth=1.2)
        axes.grid(False)
        axes.tick_params(length=0)
        axes.set_xlabel("mode")
        bar = figure.colorbar(image, ax=axes, shrink=0.9)
        bar.set_label("share of the reference\n(fraction)")
        svg = _to_svg(figure)
    caption = (
        "Mode shares of each client's local reference, with the global target shares in the "
        "first row. A client whose row differs from the first row is a skewed reference: a "
        "verifier that uses it alone under-selects the modes it lacks."
    )
    return Plot("partition", "Partition of the references: clients × modes", caption, svg)


def all_plots(receipt: Receipt) -> list[Plot]:
    """Return every figure of the receipt, in the order the report shows them."""
    return [
        tail_retention_plot(receipt),
        trace_ratio_plot(receipt),
        frechet_plot(receipt),
        mode_shares_plot(receipt),
        partition_heatmap(receipt),
    ]
