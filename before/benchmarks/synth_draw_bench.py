"""How fast synthetic stand-in images are drawn: one process, and pools of processes
(`cogip data synth --from-bench`, `benchmarks/scaling.sh`). Prints images/s; --out writes them as JSON.

    python benchmarks/synth_draw_bench.py [--size 1008] [--n 160] [--workers 4 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cogip.data.synth import _draw_all  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1008)
    p.add_argument("--n", type=int, default=160, help="images per run (a pool needs 64 and up)")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 16])
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    result = {"size": a.size, "n": a.n, "images_per_s": {}}
    with tempfile.TemporaryDirectory() as folder:
        for workers in [1, *a.workers]:
            n = min(a.n, 16) if workers == 1 else a.n   # one process: a sample is enough
            jobs = [("Aesthetics", 5.0, [workers, i], a.size, f"{folder}/{workers}_{i}.jpg") for i in range(n)]
            t = time.perf_counter()
            _draw_all(jobs, f"{workers} process(es)", workers)
            rate = round(n / (time.perf_counter() - t), 1)
            result["images_per_s"][str(workers)] = rate
            print(f"{workers:3d} process(es): {rate} images/s of {a.size} px", flush=True)
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
