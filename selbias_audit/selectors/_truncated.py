"""Truncated kernels: Sinkhorn sweeps over the few entries a concentrated plan keeps.

At a small blur each row of an entropic plan carries its mass on a handful of columns.
On workload B of benchmarks/README.md a row keeps 1.3 of 2000 columns on average at
blur 0.05, yet a dense sweep evaluates an exponential for every entry. A dense pass at
level ``eps_b`` with potential ``phi_b`` (in cost units, ``phi_j = g_j + eps log b_j``)
records, per row, the columns whose logit lies within ``keep`` of the row log-sum-exp.
Every dropped entry then satisfies

    phi_b_j - C_ij < m_i - reach,    reach = (keep - log M) * eps_b,

where ``m_i`` is the row maximum of ``phi_b_j - C_ij``. Take a later level
``eps <= eps_b`` with potential ``phi`` and drift ``Delta = max_j |phi_j - phi_b_j|``.
A dropped entry rose by at most ``Delta`` and the row maximum fell by at most
``Delta``, so the entry lies more than ``(reach - 2 Delta) / eps`` below its row
maximum in logit units. A truncated sweep is used only while that bound is at least
``safe_logit_gap(dtype)``. Otherwise the solver runs a dense pass again. The dropped
entries then move a row's log-sum-exp and a column's mass by less than the rounding of
the solve dtype, except in columns whose whole mass is tiny, which the solver treats as
starved and recomputes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from selbias_audit.selectors._conventions import BLOCK_ELEMENTS
from selbias_audit.selectors._kernels import row_lse

# Extra logit margin kept at a build, above the safe gap. It buys drift: one annealing
# level later (eps = 0.81 eps_b) the potentials may move by about 14 eps_b in float32
# before the kernel must be rebuilt.
KEEP_SLACK = 20.0

# A truncated kernel is built only when its widest row keeps at most this share of the
# columns, because wider rows make the gathers cost more than the dense pass they replace.
MAX_WIDTH_SHARE = 0.125

# Kernels at most this wide are not narrowed further: the gathers are cheap already.
MIN_NARROW_WIDTH = 8


def safe_logit_gap(dtype: torch.dtype) -> float:
    """Return the logit gap below a row's maximum past which entries may be dropped.

    exp(-gap) is far below the rounding of ``dtype`` (4e-18 for float32, 2e-35 for
    float64), so a row's log-sum-exp cannot tell the dropped entries apart from zero.
    """
    return 40.0 if dtype == torch.float32 else 80.0


def keep_logit_gap(dtype: torch.dtype, columns: int) -> float:
    """Return the logit margin below the row log-sum-exp kept at a build.

    The log-sum-exp exceeds the row maximum by at most ``log(columns)``, hence that term.
    """
    return safe_logit_gap(dtype) + math.log(max(columns, 1)) + KEEP_SLACK


def starved_mass(dtype: torch.dtype) -> float:
    """Return the column mass under which a truncated sweep's column sum is not trusted.

    Every row drops at most ``exp(-safe_logit_gap)`` of its unit mass, so a column loses
    at most that much in all. Columns holding less than that divided by the machine
    epsilon could be off by more than rounding and are recomputed exactly.
    """
    return math.exp(-safe_logit_gap(dtype)) / torch.finfo(dtype).eps


@dataclass(frozen=True)
class Bound:
    """One truncation: at potential ``phi`` every dropped entry sat at least ``reach``
    (cost units) below its row maximum."""

    phi: Tensor
    reach: float

    @classmethod
    def after_keeping(cls, phi: Tensor, keep: float, columns: int, epsilon: float) -> Bound:
        """Return the bound of keeping entries within ``keep`` (logits) of their row's
        log-sum-exp over ``columns`` columns at ``epsilon``.

        The log-sum-exp exceeds the row maximum by at most ``log(columns)``, so a dropped
        entry sat at least ``keep - log(columns)`` logits below that maximum.
        """
        return cls(phi.clone(), (keep - math.log(columns)) * epsilon)


def entries_within(logits: Tensor, lse: Tensor, keep: float) -> Tensor:
    """Return the mask of logits at most ``keep`` below their row's log-sum-exp."""
    return logits >= (lse - keep)[:, None]


def anchor_slots(columns: Tensor, anchor_columns: Tensor) -> Tensor:
    """Return each row's slot that contains its anchor column, or slot 0 when none does."""
    return (columns == anchor_columns[:, None]).int().argmax(dim=1)


@dataclass(frozen=True)
class TruncatedKernel:
    """Kept entries of a cost matrix in padded row format (ELLPACK).

    Row ``i`` keeps the columns ``columns[i, :]`` with costs ``costs[i, :]``; padding
    entries have cost +inf, so their exponential is exactly zero. ``bounds`` contains one
    :class:`Bound` per truncation that led to this entry set (a build from a dense pass,
    then any narrowing), and every one of them must remain satisfied.
    """

    columns: Tensor
    """(N, K) int64 column indices, 0 at padding."""
    costs: Tensor
    """(N, K) costs C_ij of the kept entries, +inf at padding."""
    anchors: Tensor
    """(N,) slot of each row's largest entry at the last look, for the row log-sum-exp."""
    bounds: tuple[Bound, ...]
    safe_gap: float
    """Logit gap that dropped entries must keep, see :func:`safe_logit_gap`."""

    @property
    def width(self) -> int:
        return int(self.columns.shape[1])

    def covers(self, phi: Tensor, epsilon: float) -> bool:
        """Return whether the dropped entries are still negligible for ``phi`` at ``epsilon``."""
        for bound in self.bounds:
            drift = float((phi - bound.phi).abs().max())
            if bound.reach - 2.0 * drift < self.safe_gap * epsilon:
                return False
        return True

    def logits(self, phi: Tensor, epsilon: float, rows: slice = slice(None)) -> Tensor:
        columns = self.columns[rows]
        return (phi.take(columns) - self.costs[rows]).div_(epsilon)

    def sweep(
        self, phi: Tensor, epsilon: float, row_weights: Tensor
    ) -> tuple[Tensor, Tensor, TruncatedKernel]:
        """Return the row log-sum-exp of ``(phi_j - C_ij) / eps``, the column mass
        ``sum_i w_i softmax_j`` over the kept entries, and the kernel to use next.

        The caller checks :meth:`covers` first. The returned kernel is this one, or a
        narrower one when most rows now keep far fewer entries than the width.
        """
        logits = self.logits(phi, epsilon)
        probabilities = torch.softmax(logits, dim=1)
        lse = row_lse(logits, probabilities, self.anchors, 0)
        weighted = probabilities.mul_(row_weights[:, None])
        mass = torch.zeros_like(phi).scatter_add_(0, self.columns.flatten(), weighted.flatten())
        return lse, mass, self.narrowed(logits, lse, phi, epsilon)

    def narrowed(self, logits: Tensor, lse: Tensor, phi: Tensor, epsilon: float) -> TruncatedKernel:
        """Return a kernel without the entries now more than the keep margin below their lse.

        The narrower kernel inherits every bound of this one and adds its own, so that
        both the entries dropped before and those dropped now stay negligible.
        """
        if self.width <= MIN_NARROW_WIDTH:
            return self
        keep = keep_logit_gap(logits.dtype, self.width)
        within = entries_within(logits, lse, keep)
        if int(within.sum(dim=1).max()) > self.width // 2:
            return self
        rows, slots = within.nonzero(as_tuple=True)
        columns, costs = pack_rows(
            rows, self.columns[rows, slots], self.costs[rows, slots], self.columns.shape[0]
        )
        anchors = anchor_slots(columns, self.columns.gather(1, self.anchors[:, None])[:, 0])
        bound = Bound.after_keeping(phi, keep, self.width, epsilon)
        return TruncatedKernel(columns, costs, anchors, (*self.bounds, bound), self.safe_gap)

    def apply(self, phi: Tensor, epsilon: float, values: Tensor) -> Tensor:
        """Return ``softmax_j((phi_j - C_ij) / eps) @ values`` over the kept entries, (N, k)."""
        rows_total = self.columns.shape[0]
        out = torch.empty(rows_total, values.shape[1], dtype=phi.dtype, device=phi.device)
        step = max(1, BLOCK_ELEMENTS // max(1, self.width * values.shape[1]))
        for start in range(0, rows_total, step):
            rows = slice(start, start + step)
            plan = torch.softmax(self.logits(phi, epsilon, rows), dim=1)
            out[rows] = torch.einsum("ik,ikd->id", plan, values[self.columns[rows]])
        return out


def pack_rows(rows: Tensor, columns: Tensor, costs: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Pack entries listed row by row (as ``nonzero`` lists them) into padded rows."""
    counts = torch.bincount(rows, minlength=count)
    width = max(1, int(counts.max()))
    # An entry's slot is its rank within its row.
    row_starts = torch.cumsum(counts, dim=0) - counts
    slots = torch.arange(rows.numel(), device=rows.device) - row_starts[rows]
    packed_columns = torch.zeros(count, width, dtype=torch.int64, device=rows.device)
    packed_costs = torch.full((count, width), math.inf, dtype=costs.dtype, device=rows.device)
    packed_columns[rows, slots] = columns
    packed_costs[rows, slots] = costs
    return packed_columns, packed_costs


class KernelBuilder:
    """Collector of the entries a dense pass keeps, block by block.

    The pass hands over each block's logits, costs and row log-sum-exp. As soon as a
    row keeps more than the width limit, collection stops and :meth:`finish` returns
    None.
    """

    def __init__(self, rows: int, cols: int, dtype: torch.dtype, phi: Tensor, epsilon: float):
        self.rows, self.cols = rows, cols
        self.phi, self.epsilon = phi, epsilon
        self.keep = keep_logit_gap(dtype, cols)
        self.safe_gap = safe_logit_gap(dtype)
        self.width_limit = max(1, int(MAX_WIDTH_SHARE * cols))
        # Keyed by the block's first row: blocks may arrive from several workers in any
        # order, and the kernel lists its entries row by row.
        self.pieces: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        self.abandoned = False

    def add(self, start: int, logits: Tensor, costs: Tensor, lse: Tensor) -> None:
        """Record the entries of one block of rows that lie within ``keep`` of their lse."""
        if self.abandoned:
            return
        within = entries_within(logits, lse, self.keep)
        if int(within.sum(dim=1).max()) > self.width_limit:
            self.abandoned = True
            return
        rows, cols = within.nonzero(as_tuple=True)
        self.pieces[start] = (rows + start, cols, costs[rows, cols])

    def finish(self, anchors: Tensor) -> TruncatedKernel | None:
        """Return the truncated kernel, or None when some row kept too many entries.

        ``anchors`` are the dense pass's anchor columns. Each row's anchor slot is the
        slot that contains that column, or slot 0 when the row dropped it.
        """
        if self.abandoned or not self.pieces:
            return None
        pieces = [self.pieces[start] for start in sorted(self.pieces)]
        rows = torch.cat([piece[0] for piece in pieces])
        columns, costs = pack_rows(
            rows,
            torch.cat([piece[1] for piece in pieces]),
            torch.cat([piece[2] for piece in pieces]),
            self.rows,
        )
        bound = Bound.after_keeping(self.phi, self.keep, self.cols, self.epsilon)
        return TruncatedKernel(
            columns, costs, anchor_slots(columns, anchors), (bound,), self.safe_gap
        )
