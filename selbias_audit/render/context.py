"""Display values for the receipt templates, computed from the receipt alone.

The functions here turn typed receipt fields into plain strings, rows and small trees
that the template prints without further logic: the comparison table, the solver
health summary, every governance field and the glossary.
"""

from __future__ import annotations

import statistics
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from selbias_audit.receipt.model import (
    SAMPLE_METRICS,
    DecayFit,
    Governance,
    MetricValue,
    Provided,
    Receipt,
    SelectorRun,
)
from selbias_audit.render.plots import selector_groups

MISSING = "missing"
# Fields whose raw name does not read well after replacing underscores.
_TITLES = {
    "non_iid_severity": "Non-IID severity",
    "ot_dtype": "OT dtype",
    "cpu_count": "CPU count",
    "psi": "psi",
}
# Governance fields shown in their own section later in the report, not twice.
_OWN_SECTION = {
    "compute_environment": "environment",
    "code_revision": "environment",
    "artifacts": "files",
}


def title_of(name: str) -> str:
    """Return the heading for a field name: ``selection_budget`` -> ``Selection budget``."""
    return _TITLES.get(name, name.replace("_", " ").capitalize())


def format_number(value: float | int) -> str:
    """Format a number with four significant digits, integers as they are."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "not computed"
    if len(values) == 1:
        return format_number(values[0])
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def _metric_cell(values: Sequence[MetricValue]) -> str:
    ok = [m.value for m in values if m.status == "ok" and m.value is not None]
    if len(values) == 1 and not ok:
        metric = values[0]
        return metric.status.replace("_", " ") + (f" ({metric.detail})" if metric.detail else "")
    cell = _mean_std(ok)
    if len(ok) < len(values):
        cell += f" ({len(ok)} of {len(values)} seeds)"
    return cell


def _decay_cell(fits: Sequence[DecayFit]) -> str:
    ok = [fit for fit in fits if fit.status == "ok" and fit.psi is not None]
    if len(fits) == 1 and ok:
        fit = ok[0]
        if fit.stderr is None:
            return f"{fit.psi:.3g}"
        return f"{fit.psi:.3g} ± {fit.stderr:.2g}"
    if not ok:
        return fits[0].status.replace("_", " ") if fits else "not computed"
    return _mean_std([fit.psi for fit in ok if fit.psi is not None])


def comparison_rows(receipt: Receipt) -> list[dict[str, str]]:
    """Return one row per selector series with its final-round metrics.

    The random baseline's seeds are one row, each cell their mean ± sample standard
    deviation.
    """
    rows = []
    for group in selector_groups(receipt):
        finals = [run.rounds[-1] for run in group.runs if run.rounds]
        rows.append(
            {
                "label": group.label,
                "role": group.role,
                "color": group.color,
                "round": str(finals[0].round) if finals else "none",
                "tail_retention": _mean_std([item.tail_retention for item in finals]),
                "trace_ratio": _mean_std([item.trace_ratio for item in finals]),
                "frechet_distance": _metric_cell([item.frechet_distance for item in finals]),
                "sinkhorn_divergence": _metric_cell(
                    [item.sinkhorn_divergence for item in finals]
                ),
                "psi": _decay_cell([run.decay for run in group.runs]),
            }
        )
    return rows


def sample_metric_rows(receipt: Receipt) -> list[dict[str, str]]:
    """Return one row per selector series with its final-round sample-level metrics.

    Receipts written before these metrics existed show "not computed".
    """
    rows = []
    for group in selector_groups(receipt):
        finals = [run.rounds[-1] for run in group.runs if run.rounds]
        row = {"label": group.label, "role": group.role, "color": group.color}
        for name in SAMPLE_METRICS:
            values = [getattr(item, name) for item in finals]
            present = [value for value in values if value is not None]
            row[name] = _metric_cell(present) if present else "not computed"
        rows.append(row)
    return rows


def solver_health_rows(runs: Sequence[SelectorRun]) -> list[dict[str, str | bool]]:
    """Aggregate the OT solves by selector run and purpose."""
    rows: list[dict[str, str | bool]] = []
    for run in runs:
        purposes = dict.fromkeys(solve.purpose for solve in run.solves)
        for purpose in purposes:
            solves = [solve for solve in run.solves if solve.purpose == purpose]
            converged = sum(solve.converged for solve in solves)
            rows.append(
                {
                    "selector": run.label,
                    "purpose": purpose,
                    "count": str(len(solves)),
                    "converged": f"{converged}/{len(solves)} ({converged / len(solves):.0%})",
                    "all_converged": converged == len(solves),
                    "max_marginal_error": f"{max(s.marginal_error for s in solves):.2e}",
                    "max_iterations": str(max(s.iterations for s in solves)),
                    "backend": ", ".join(sorted({s.backend for s in solves})),
                    "dtype": ", ".join(sorted({s.dtype for s in solves})),
                    "blur": ", ".join(format_number(b) for b in sorted({s.blur for s in solves})),
                    "epsilon": ", ".join(
                        format_number(e) for e in sorted({s.epsilon for s in solves})
                    ),
                }
            )
    return rows


def display_value(value: Any, *, mode_names: Sequence[str] = (), key: str = "") -> dict[str, Any]:
    """Convert a receipt value into a display tree for the template's ``show`` macro.

    Node kinds: ``text``, ``provided`` (with ``missing`` set for a missing fact),
    ``fields`` (label and node pairs), ``table`` (columns and string rows) and ``list``.
    """
    if isinstance(value, Provided):
        return {"kind": "provided", "missing": value.status == "missing", "text": value.value}
    if isinstance(value, BaseModel):
        items = [
            (title_of(name), display_value(getattr(value, name), mode_names=mode_names, key=name))
            for name in type(value).model_fields
        ]
        return {"kind": "fields", "items": items}
    if isinstance(value, dict):
        if not value:
            return {"kind": "text", "text": "none"}
        items = [(str(k), display_value(v, mode_names=mode_names)) for k, v in value.items()]
        return {"kind": "fields", "items": items}
    if isinstance(value, list | tuple):
        return _display_sequence(list(value), mode_names=mode_names, key=key)
    return {"kind": "text", "text": _scalar_text(value)}


def _scalar_text(value: Any) -> str:
    if value is None:
        return "not given"
    if isinstance(value, bool | int | float):
        return format_number(value)
    return str(value)


def _display_sequence(values: list[Any], *, mode_names: Sequence[str], key: str) -> dict[str, Any]:
    if not values:
        return {"kind": "text", "text": "none"}
    if key.endswith("mode_shares") and len(values) == len(mode_names):
        pairs = zip(mode_names, values, strict=True)
        text = ", ".join(f"{name}: {share:.3g}" for name, share in pairs)
        return {"kind": "text", "text": text}
    if all(isinstance(item, BaseModel) for item in values):
        fields = list(type(values[0]).model_fields)
        rows = [
            [_cell_text(getattr(item, name), mode_names, name) for name in fields]
            for item in values
        ]
        return {"kind": "table", "columns": [title_of(name) for name in fields], "rows": rows}
    if all(not isinstance(item, dict | list | BaseModel) for item in values):
        return {"kind": "text", "text": ", ".join(_scalar_text(item) for item in values)}
    items = [display_value(item, mode_names=mode_names) for item in values]
    return {"kind": "list", "items": items}


def _cell_text(value: Any, mode_names: Sequence[str], key: str) -> str:
    return _flatten(display_value(value, mode_names=mode_names, key=key))


def _flatten(node: dict[str, Any]) -> str:
    if node["kind"] == "text":
        return str(node["text"])
    if node["kind"] == "provided":
        return MISSING if node["missing"] else str(node["text"])
    if node["kind"] == "fields":
        return "; ".join(f"{label}: {_flatten(child)}" for label, child in node["items"])
    if node["kind"] == "list":
        return ", ".join(_flatten(child) for child in node["items"])
    return f"{len(node['rows'])} rows"


def governance_entries(receipt: Receipt) -> list[dict[str, Any]]:
    """Return every governance field with its title, description and display tree."""
    entries = []
    for name, info in Governance.model_fields.items():
        entries.append(
            {
                "name": name,
                "title": title_of(name),
                "description": info.description or _class_doc(info.annotation),
                "section": _OWN_SECTION.get(name),
                "value": display_value(
                    getattr(receipt.governance, name), mode_names=receipt.modes.names, key=name
                ),
            }
        )
    return entries


def missing_facts(receipt: Receipt) -> list[str]:
    """Return the dotted paths of every ``Provided`` fact that the user did not supply."""
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Provided):
            if value.status == "missing":
                found.append(path)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{path}.{name}" if path else name)

    walk(receipt.governance, "")
    return found


def _class_doc(annotation: Any) -> str:
    for candidate in _model_classes(annotation):
        return _first_line(candidate.__doc__)
    return ""


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """Return the pydantic model classes inside a type annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for argument in typing.get_args(annotation):
            found.extend(_model_classes(argument))
    return found


def glossary(root: type[BaseModel] = Receipt) -> list[dict[str, Any]]:
    """Return each receipt model with its summary and the descriptions of its fields.

    The text comes from the models' docstrings and field descriptions, so the glossary
    always matches the schema that the receipt was validated against.
    """
    order: list[type[BaseModel]] = []
    pending = [root]
    while pending:
        model = pending.pop(0)
        if model in order:
            continue
        order.append(model)
        for info in model.model_fields.values():
            pending.extend(_model_classes(info.annotation))
    return [
        {
            "model": model.__name__,
            "summary": _first_line(model.__doc__),
            "fields": [
                (name, info.description)
                for name, info in model.model_fields.items()
                if info.description
            ],
        }
        for model in order
    ]
