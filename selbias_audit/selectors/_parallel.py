"""Run independent pieces of OT work on several CPU cores at once.

Two granularities share one pool of workers: whole silo computations side by side
(:func:`map_tasks`, for example one transport solve per silo) and the row blocks of
one Sinkhorn pass (:func:`map_blocks`, for server-side solves). A pass started inside a
task runs its blocks in that task's thread, so the two never nest.

A pass applies about ten elementwise and reduction operations to each block of a cost
matrix. With torch's own intra-op threads every operation splits the block across the
cores, so the halves of a block travel between core caches from one operation to the
next, and every operation ends in a barrier. Giving each core whole blocks instead
keeps a block in one core's cache from the first operation to the last. On the 2-core
machine of benchmarks/README.md, four 20000 x 2000 silo solves ran about 1.7 times
faster side by side, and a server pass shared by blocks about 1.4 times faster.

Results do not depend on the number of workers: each block or task is computed by
single-threaded operations, and the per-block partial sums are added in block order.
Work too small to share (a single block, or silo solves below PARALLEL_MIN_ENTRIES)
runs in the calling thread on torch's own threads instead, so its rounding can differ
between machines with different core counts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

# Minimum cost-matrix entries per silo for silo solves to run side by side. Below it,
# Python overhead and the GIL dominate. On the 2-core machine of benchmarks/README.md,
# ten 400 x 150 silo solves ran 35 % slower side by side, ten 2000 x 500 ones 40 % faster.
PARALLEL_MIN_ENTRIES = 1 << 18

Item = TypeVar("Item")
Result = TypeVar("Result")

# Parallel regions from different Python threads would fight over torch's global
# thread count, so only one runs at a time.
_REGION_LOCK = threading.Lock()
_inside = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    if _pool is None or _pool_size != workers:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="selbias-pass")
        _pool_size = workers
    return _pool


def _in_region() -> bool:
    return getattr(_inside, "active", False)


def _run_marked(work: Callable[[Item], Result], item: Item) -> Result:
    _inside.active = True
    try:
        return work(item)
    finally:
        _inside.active = False


def map_tasks(
    work: Callable[[Item], Result],
    items: Sequence[Item],
    device: torch.device,
    *,
    entries: int | None = None,
) -> list[Result]:
    """Return ``[work(item) for item in items]``, computed in parallel on a CPU.

    The items are shared out among as many workers as torch has threads, while torch
    itself runs single-threaded; the thread count is restored afterwards. Every item is
    thus computed by single-threaded operations, whatever the number of cores, and
    the results come back in the order of ``items``. Inside a worker, nested calls run
    in that worker's thread. ``entries``, the cost-matrix size of one item, keeps items
    below PARALLEL_MIN_ENTRIES in the calling thread.
    """
    small = entries is not None and entries < PARALLEL_MIN_ENTRIES
    if device.type != "cpu" or _in_region() or small or len(items) <= 1:
        return [work(item) for item in items]
    with _REGION_LOCK:
        threads = torch.get_num_threads()
        workers = min(threads, len(items))
        torch.set_num_threads(1)
        try:
            if workers <= 1:
                return [_run_marked(work, item) for item in items]
            pool = _executor(workers)
            return list(pool.map(lambda item: _run_marked(work, item), items))
        finally:
            torch.set_num_threads(threads)


def map_blocks(
    work: Callable[[int, int], Result], ranges: Sequence[tuple[int, int]], device: torch.device
) -> list[Result]:
    """Return ``[work(start, stop) for start, stop in ranges]``, computed as in
    :func:`map_tasks`. ``work`` must only write to the rows ``start:stop`` of shared
    tensors."""
    return map_tasks(lambda bounds: work(*bounds), ranges, device)
