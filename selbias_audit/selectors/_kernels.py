"""Cost matrices in row blocks and the fused softmax pass of the Sinkhorn solvers.

One pass over ``A_ij = h_j - C_ij / eps`` gives, per block of rows, the row
log-sum-exp, the column mass of the row-normalised plan and, when asked, the plan
applied to a set of values. Memory is one cost matrix (or none, when it is larger than
the cache budget) plus one block.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selbias_audit.selectors._conventions import BLOCK_ELEMENTS, half_squared_distances

# Rows per GEMM when a cost matrix is built. A few hundred rows keep the output block in
# cache. NOTE: an estimate from one noisy 2-core CPU, where 256 rows were up to twice as
# fast as 50 or 4096 rows on a 20000 x 20000 x 64 matrix.
BUILD_ROWS = 256

# A softmax entry above this floor is a normal float in float32 and float64 with full
# relative precision, so it recovers the row log-sum-exp exactly.
ANCHOR_FLOOR = 1e-30


class CostBlocks:
    """Row blocks of ``C_ij = ||x_i - y_j||^2 / 2``, kept in memory when small enough.

    Both clouds are centred on their common mean in float64 (a translation leaves C
    unchanged) and the costs are then computed in the solve dtype. Centring keeps the
    squared norms of the expansion small, so a float32 cost carries an absolute error
    of about 1e-7 times the squared radius of the clouds, below what float32 keeps of
    ``C / eps`` anyway. A float32 GEMM is about twice as fast as a float64 one.
    """

    def __init__(self, x: Tensor, y: Tensor, dtype: torch.dtype, cache_bytes: int) -> None:
        x64, y64 = x.to(torch.float64), y.to(torch.float64)
        count = x64.shape[0] + y64.shape[0]
        centre = (x64.sum(dim=0) + y64.sum(dim=0)) / count
        self.x = (x64 - centre).to(dtype)
        self.y = (y64 - centre).to(dtype)
        self.dtype = dtype
        self.rows, self.cols = x.shape[0], y.shape[0]
        self.rows_per_block = max(1, BLOCK_ELEMENTS // max(1, self.cols))
        self.dense: Tensor | None = None
        self.max_cost: float
        itemsize = torch.empty((), dtype=dtype).element_size()
        if self.rows * self.cols * itemsize <= cache_bytes:
            self.dense = torch.empty(self.rows, self.cols, dtype=dtype, device=x.device)
            for start in range(0, self.rows, BUILD_ROWS):
                stop = min(start + BUILD_ROWS, self.rows)
                half_squared_distances(self.x[start:stop], self.y, out=self.dense[start:stop])
            self.max_cost = float(self.dense.max())
        else:
            # One extra sweep, so that streamed and cached solves follow the same schedule.
            self.max_cost = max(
                float(self.block(start, stop).max()) for start, stop in self.ranges()
            )

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
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Sweep the rows of ``A_ij = h_j - C_ij / eps`` once.

    Returns the row log-sum-exp (N,), the column mass ``sum_i w_i softmax_j(A_i)``
    (M,) when ``row_weights`` is given, and ``softmax(A) @ values`` (N, k) when
    ``values`` is given. ``anchors`` (N,) are per-row anchor columns for the row
    log-sum-exp, updated in place (see :func:`row_lse`).
    """
    lse = torch.empty(costs.rows, dtype=h.dtype, device=h.device)
    mass = None if row_weights is None else torch.zeros_like(h)
    projected = None
    if values is not None:
        projected = torch.empty(costs.rows, values.shape[1], dtype=h.dtype, device=h.device)
    for start, stop in costs.ranges():
        logits = torch.add(h, costs.block(start, stop), alpha=-1.0 / epsilon)
        probabilities = torch.softmax(logits, dim=1)
        lse[start:stop] = row_lse(logits, probabilities, anchors, start)
        if mass is not None:
            mass.addmv_(probabilities.T, row_weights[start:stop])
        if projected is not None:
            torch.mm(probabilities, values, out=projected[start:stop])
    return lse, mass, projected


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
