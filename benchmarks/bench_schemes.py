"""Time Scheme I and Scheme II on a saved workload and save the kept indices.

Usage::

    python benchmarks/bench_schemes.py run WORKLOAD.npz --scheme scheme1 --save s1.npy
    python benchmarks/bench_schemes.py run WORKLOAD.npz --scheme scheme1 --reference --save r1.npy
    python benchmarks/bench_schemes.py compare s1.npy r1.npy

A workload is an .npz with ``candidates`` (N, d), ``labels`` (N,) and ``refs`` (K, M, d),
as written by ``make_workload.py OUT.npz N M K D SEED``. ``run`` keeps a quarter of the
candidates. It standardises every feature by the mean and standard deviation of the
pooled references, which stand in for the global target (``--raw`` skips this). It
prints one JSON line with wall and CPU seconds, the peak resident memory of the
process, the solve count and the largest marginal error. Run one scheme per process,
so that the peak memory belongs to that scheme alone. ``--reference`` runs the
straightforward geomloss computation of :mod:`geomloss_reference` at the same
parameters instead.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geomloss_reference import scheme1_reference, scheme2_reference

from selbias_audit.selectors.base import SelectionContext
from selbias_audit.selectors.scheme1 import Scheme1Selector
from selbias_audit.selectors.scheme2 import Scheme2Selector
from selbias_audit.spec import Scheme1Spec, Scheme2Spec


def load_workload(
    path: Path, raw: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Return the candidates and the client references, standardised unless ``raw``."""
    data = np.load(path)
    candidates = torch.from_numpy(data["candidates"]).to(torch.float64)
    references = [torch.from_numpy(r).to(torch.float64) for r in data["refs"]]
    if not raw:
        pooled = torch.cat(references)
        mean, std = pooled.mean(dim=0), pooled.std(dim=0)
        candidates = (candidates - mean) / std
        references = [(r - mean) / std for r in references]
    return candidates.to(dtype), [r.to(dtype) for r in references]


def peak_memory_mib() -> float:
    """Return the peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    candidates, references = load_workload(args.workload, args.raw, dtype)
    candidates = candidates.to(device)
    references = [r.to(device) for r in references]
    count = candidates.shape[0] // 4
    baseline_mib = peak_memory_mib()

    wall, cpu = time.perf_counter(), time.process_time()
    summary: dict[str, object] = {}
    if args.reference:
        if args.scheme == "scheme1":
            indices = scheme1_reference(candidates, references, count)
        else:
            indices, _ = scheme2_reference(candidates, references, count)
    else:
        context = SelectionContext(
            round=0,
            references=tuple(references),
            generator=torch.Generator().manual_seed(0),
            device=device,
            dtype=dtype,
        )
        selector = (
            Scheme1Selector(Scheme1Spec())
            if args.scheme == "scheme1"
            else Scheme2Selector(Scheme2Spec())
        )
        selection = selector.select(candidates, count, context)
        indices = selection.indices
        summary["solves"] = len(selection.solves)
        summary["max_marginal_error"] = max(r.marginal_error for r in selection.solves)
        summary["sweeps"] = sum(r.iterations for r in selection.solves)
    if device.type == "cuda":
        torch.cuda.synchronize()
        summary["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    summary.update(
        workload=str(args.workload),
        scheme=args.scheme,
        implementation="geomloss reference" if args.reference else "selbias_audit",
        dtype=args.dtype,
        standardised=not args.raw,
        candidates=int(candidates.shape[0]),
        kept=count,
        threads=torch.get_num_threads(),
        wall_s=round(time.perf_counter() - wall, 2),
        cpu_s=round(time.process_time() - cpu, 2),
        peak_rss_mib=round(peak_memory_mib(), 1),
        rss_before_mib=round(baseline_mib, 1),
    )
    if args.save:
        np.save(args.save, indices.cpu().numpy())
    print(json.dumps(summary))


def compare(args: argparse.Namespace) -> None:
    first, second = np.load(args.first), np.load(args.second)
    shared = len(set(first.tolist()) & set(second.tolist()))
    print(
        json.dumps({"kept": len(first), "shared": shared, "agreement": shared / max(1, len(first))})
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("run", help="time one scheme on a workload")
    timing.add_argument("workload", type=Path, help="workload .npz from make_workload.py")
    timing.add_argument("--scheme", choices=["scheme1", "scheme2"], required=True)
    timing.add_argument(
        "--reference", action="store_true", help="run the geomloss reference instead"
    )
    timing.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    timing.add_argument("--device", default="cpu", help="torch device, for example cpu or cuda")
    timing.add_argument("--raw", action="store_true", help="skip standardisation of the features")
    timing.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)"
    )
    timing.add_argument("--save", type=Path, help="write the kept indices to this .npy file")
    timing.set_defaults(handler=run)
    agreement = commands.add_parser("compare", help="share of kept indices two runs have in common")
    agreement.add_argument("first", type=Path)
    agreement.add_argument("second", type=Path)
    agreement.set_defaults(handler=compare)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
