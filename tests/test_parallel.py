"""Parallel passes and silo tasks give the same numbers on any number of cores."""

from __future__ import annotations

import pytest
import torch

from selbias_audit.selectors._conventions import SinkhornSettings
from selbias_audit.selectors._parallel import PARALLEL_MIN_ENTRIES, map_blocks, map_tasks
from selbias_audit.selectors.sinkhorn import solve_cross, solve_symmetric

CPU = torch.device("cpu")


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_tasks_come_back_in_order_and_restore_threads(restore_threads: None) -> None:
    torch.set_num_threads(2)
    results = map_tasks(lambda item: (item, torch.get_num_threads()), list(range(7)), CPU)
    assert [item for item, _ in results] == list(range(7))
    # Every task ran on single-threaded torch, and the count is back afterwards.
    assert {threads for _, threads in results} == {1}
    assert torch.get_num_threads() == 2


def test_small_tasks_stay_in_the_caller(restore_threads: None) -> None:
    torch.set_num_threads(2)
    small = PARALLEL_MIN_ENTRIES - 1
    results = map_tasks(lambda item: torch.get_num_threads(), range(3), CPU, entries=small)
    # Too little work to share: torch keeps its own two threads.
    assert results == [2, 2, 2]


def test_task_error_reaches_the_caller(restore_threads: None) -> None:
    torch.set_num_threads(2)

    def fail_on_three(item: int) -> int:
        if item == 3:
            raise ValueError("silo 3 failed")
        return item

    with pytest.raises(ValueError, match="silo 3 failed"):
        map_tasks(fail_on_three, range(5), CPU)
    assert torch.get_num_threads() == 2


def test_blocks_inside_a_task_run_in_that_task(restore_threads: None) -> None:
    torch.set_num_threads(2)

    def task(item: int) -> list[int]:
        return map_blocks(lambda start, stop: start + stop + item, [(0, 1), (1, 2)], CPU)

    assert map_tasks(task, range(3), CPU) == [[1, 3], [2, 4], [3, 5]]


def test_solves_are_identical_on_one_and_two_cores(restore_threads: None) -> None:
    generator = torch.Generator().manual_seed(11)
    # 12000 x 100 costs span two row blocks, so two workers share each pass.
    x = torch.randn(12_000, 5, generator=generator)
    y = torch.randn(100, 5, generator=generator) + 0.5
    settings = SinkhornSettings(blur=0.1, dtype=torch.float32)
    results = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cross = solve_cross(x, y, settings, purpose="test", project=True)
        self_term = solve_symmetric(y, settings, purpose="test", project=True)
        results[threads] = (cross.f, cross.g, cross.projection, self_term.f)
    for single_core, two_cores in zip(results[1], results[2], strict=True):
        assert torch.equal(single_core, two_cores)
