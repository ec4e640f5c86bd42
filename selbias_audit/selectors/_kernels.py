"""Cost matrices in row blocks and the fused softmax pass of the Sinkhorn solvers.

One pass over ``A_ij = h_j - C_ij / eps`` gives, per block of rows, the row
log-sum-exp, the column mass of the row-normalised plan and, when asked, the plan
applied to a set of values. Memory is one cost matrix (or none, when it is larger than
the cache budget or the caller streams it) plus one block.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from selbias_audit.selectors._conventions import BLOCK_ELEMENTS, half_squared_distances
from selbias_audit.selectors._parallel import map_blocks

if TYPE_CHECKING:
    from selbias_audit.selectors._truncated import KernelBuilder

# Rows per GEMM when a cost matrix is built. A few hundred rows keep the output block in
# cache. NOTE: an estimate from one noisy 2-core CPU, where 256 rows were up to twice as
# fast as 50 or 4096 rows on a 20000 x 20000 x 64 matrix.
BUILD_ROWS = 256

# A softmax entry above this floor is a normal float in float32 and float64 with full
# relative precision, so it recovers the row log-sum-exp exactly.
ANCHOR_FLOOR = 1e-30

# Above this share of rows with a weak anchor, a block re-anchors every row.
REANCHOR_SHARE = 0.05

# Below this share of non-negligible entries, a block of the plan is applied to values
# through its non-zero entries instead of a dense product. At small blur the rows of a
# self-problem's plan hold a handful of entries each.
SPARSE_SHARE = 0.02


def underflow_margin(dtype: torch.dtype) -> float:
    """Return how far below a row's anchor logit an entry is raised to a floor.

    exp of a logit more than ``-log(tiny)`` below the row maximum is subnormal, and
    x86 cores compute subnormals tens of times slower than normal floats. Raising such
    logits to ``anchor - margin`` keeps every exp normal. The raised entries carry
    at most ``e^2 * tiny`` each. A column whose whole mass is that small counts as
    starved in the solvers, which recompute its update exactly.
    """
    return -math.log(torch.finfo(dtype).tiny) - 2.0


class CostBlocks:
    """Row blocks of ``C_ij = ||x_i - y_j||^2 / 2``, kept in memory when small enough.

    Both clouds are centred on their common mean in float64 (a translation leaves C
    unchanged) and the costs are then computed in the solve dtype. Centring keeps the
    squared norms of the expansion small, so a float32 cost carries an absolute error
    of about 1e-7 times the squared radius of the clouds, below what float32 keeps of
    ``C / eps`` anyway. A float32 GEMM is about twice as fast as a float64 one.
    """

    def __init__(self, x: Tensor, y: Tensor, dtype: torch.dtype, cache_bytes: int) -> None:
        """Centre both clouds and build the cost matrix when it fits in ``cache_bytes``."""
        x64, y64 = x.to(torch.float64), y.to(torch.float64)
        count = x64.shape[0] + y64.shape[0]
        centre = (x64.sum(dim=0) + y64.sum(dim=0)) / count
        self.x = (x64 - centre).to(dtype)
        self.y = (y64 - centre).to(dtype)
        self.dtype = dtype
        self.rows, self.cols = x.shape[0], y.shape[0]
        self.rows_per_block = max(1, BLOCK_ELEMENTS // max(1, self.cols))
        self.dense: Tensor | None = None
        self._max_cost: float | None = None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if self.rows * self.cols * itemsize <= cache_bytes:
            self.dense = torch.empty(self.rows, self.cols, dtype=dtype, device=x.device)
            for start in range(0, self.rows, BUILD_ROWS):
                stop = min(start + BUILD_ROWS, self.rows)
                half_squared_distances(self.x[start:stop], self.y, out=self.dense[start:stop])

    @property
    def max_cost(self) -> float:
        """Largest entry of the cost matrix, computed on first use.

        A streamed matrix pays one extra pass for it, so that streamed and cached solves
        follow the same schedule.
        """
        if self._max_cost is None:
            if self.dense is not None:
                self._max_cost = float(self.dense.max())
            else:
                self._max_cost = max(
                    float(self.block(start, stop).max()) for start, stop in self.ranges()
                )
        return self._max_cost

    def ranges(self) -> list[tuple[int, int]]:
        step = self.rows_per_block
        return [(start, min(start + step, self.rows)) for start in range(0, self.rows, step)]

    def block(self, start: int, stop: int) -> Tensor:
        if self.dense is not None:
            return self.dense[start:stop]
        return half_squared_distances(self.x[start:stop], self.y)

    def columns(self, index: Tensor) -> Tensor:
        """Return the (N, len(index)) cost columns ``C[:, index]``."""
        if self.dense is not None:
            return self.dense[:, index]
        return half_squared_distances(self.x, self.y[index])


def softmax_pass(
    costs: CostBlocks,
    h: Tensor,
    epsilon: float,
    *,
    row_weights: Tensor | None = None,
    values: Tensor | None = None,
    anchors: Tensor | None = None,
    builder: KernelBuilder | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Sweep the rows of ``A_ij = h_j - C_ij / eps`` once.

    Returns the row log-sum-exp (N,), the column mass ``sum_i w_i softmax_j(A_i)``
    (M,) when ``row_weights`` is given, and ``softmax(A) @ values`` (N, k) when
    ``values`` is given. ``anchors`` (N,) are per-row anchor columns for the row
    log-sum-exp, updated in place (see :func:`row_lse`); with anchors, logits far
    below a row's anchor are raised to a floor (see :func:`underflow_margin`).
    ``builder`` collects the entries a truncated kernel keeps.
    """
    lse = torch.empty(costs.rows, dtype=h.dtype, device=h.device)
    projected = None
    if values is not None:
        projected = torch.empty(costs.rows, values.shape[1], dtype=h.dtype, device=h.device)
    margin = underflow_margin(h.dtype)

    def sweep_block(start: int, stop: int) -> Tensor | None:
        block = costs.block(start, stop)
        logits = torch.add(h, block, alpha=-1.0 / epsilon)
        if anchors is not None:
            floor = logits.gather(1, anchors[start:stop, None]).sub_(margin)
            torch.maximum(logits, floor, out=logits)
        probabilities = torch.softmax(logits, dim=1)
        lse[start:stop] = row_lse(logits, probabilities, anchors, start)
        if builder is not None:
            builder.add(start, logits, block, lse[start:stop])
        if projected is not None:
            apply_plan(probabilities, values, out=projected[start:stop])
        if row_weights is None:
            return None
        return torch.mv(probabilities.T, row_weights[start:stop])

    partial_masses = map_blocks(sweep_block, costs.ranges(), h.device)
    mass = None
    if row_weights is not None:
        # Block order, not completion order, so the sum is the same on any core count.
        mass = torch.zeros_like(h)
        for partial in partial_masses:
            assert partial is not None
            mass += partial
    return lse, mass, projected


def apply_plan(probabilities: Tensor, values: Tensor, *, out: Tensor) -> None:
    """Write ``probabilities @ values`` to ``out``, skipping entries below ANCHOR_FLOOR.

    A skipped entry moves a row of ``out`` by at most ``ANCHOR_FLOOR * max|values|``,
    far below the rounding of either float type, so the sparse and dense products agree
    to rounding.
    """
    # NOTE: index_add_ accumulates with atomics on CUDA, in no fixed order, so the GPU
    # keeps the dense product and with it reproducible sums.
    if probabilities.device.type != "cpu":
        torch.mm(probabilities, values, out=out)
        return
    significant = probabilities >= ANCHOR_FLOOR
    if int(significant.sum()) > SPARSE_SHARE * probabilities.numel():
        torch.mm(probabilities, values, out=out)
        return
    rows, cols = significant.nonzero(as_tuple=True)
    weighted = values[cols] * probabilities[rows, cols][:, None]
    out.zero_().index_add_(0, rows, weighted)


def row_lse(logits: Tensor, probabilities: Tensor, anchors: Tensor | None, start: int) -> Tensor:
    """Return ``lse_i = A_ij - log softmax(A_i)_j`` for an anchor column j of each row.

    Any column whose softmax entry is well above underflow gives the exact lse. The
    anchor of a row is the column that held its maximum at an earlier pass, so two
    cheap gathers replace two full max passes. Rows whose anchor entry fell below
    ANCHOR_FLOOR are re-anchored at their current maximum (``anchors`` is updated).
    """
    if anchors is None:
        # The largest softmax entry is exp(max - lse), which lies in [1/M, 1].
        return logits.amax(dim=1) - probabilities.amax(dim=1).log()
    rows = logits.shape[0]
    column = anchors[start : start + rows, None]
    anchored = probabilities.gather(1, column)[:, 0]
    lse = logits.gather(1, column)[:, 0] - anchored.log()
    weak = torch.nonzero(anchored < ANCHOR_FLOOR).flatten()
    if weak.numel() > REANCHOR_SHARE * rows:
        # While the blur shrinks, many rows' maxima move at once; one argmax pass over
        # the block is then cheaper than copying out the weak rows.
        top = probabilities.argmax(dim=1, keepdim=True)
        anchors[start : start + rows] = top[:, 0]
        return logits.gather(1, top)[:, 0] - probabilities.gather(1, top)[:, 0].log()
    if weak.numel() > 0:
        top = probabilities[weak].argmax(dim=1, keepdim=True)
        anchors[start + weak] = top[:, 0]
        lse[weak] = (
            logits[weak].gather(1, top)[:, 0] - probabilities[weak].gather(1, top)[:, 0].log()
        )
    return lse


def exact_column_lse(costs: CostBlocks, index: Tensor, row_h: Tensor, epsilon: float) -> Tensor:
    """Return ``logsumexp_i(row_h_i - C_ij / eps)`` for the columns ``index``."""
    block = torch.add(row_h[:, None], costs.columns(index), alpha=-1.0 / epsilon)
    return torch.logsumexp(block, dim=0)
