"""Time a whole audit of an example run description and print the figures.

Usage: python benchmarks/bench_audit.py [RUN.yaml ...]   (default: examples/digits.yaml)

Prints the wall time of each audit end to end (load, loop, metrics, PDF, signing), the time of
each selector run, and the peak resident memory of this process. Outputs go to a temporary
folder, signed with a throwaway key.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(paths: list[str]) -> None:
    """Run and time each audit."""
    from selbias_audit.engine import run_audit

    runs = [Path(p) for p in paths] or [ROOT / "examples" / "digits.yaml"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["SELBIAS_KEY"] = str(Path(scratch) / "bench-key.pem")
        for run in runs:
            start = time.perf_counter()
            result = run_audit(run, out_dir=Path(scratch) / run.stem)
            total = time.perf_counter() - start
            print(f"\n{run.name}: {total:.1f} s end to end, exit code {result.exit_code}")
            for selector_run in result.receipt.runs:
                final = selector_run.rounds[-1]
                print(f"  {selector_run.label:<28} {selector_run.seconds:7.1f} s  "
                      f"tail retention {final.tail_retention:.3f}  "
                      f"trace ratio {final.trace_ratio:.3f}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\npeak resident memory: {peak_kib / 1024:.0f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
