"""What `--compile` adds to loading a scorer: the tiny Qwen model loaded by `ScorerLoading` onto the GPU in a
new process, uncompiled and compiled (`--compile all`), each under cProfile. The tiny model's weights load in
no time, so what is left is the loading's own work: imports, the rewrites, `compile_blocks`.

    python benchmarks/compile_load_probe.py --out DIR [--runs none all none all]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import cProfile, io, json, pstats, sys, time
t0 = time.perf_counter()
import torch
from cogip.evaluate.scorer import ScorerLoading
t1 = time.perf_counter()
mode, path = sys.argv[1], sys.argv[2]
device = "cuda" if torch.cuda.is_available() else "cpu"
before = set(sys.modules)
loading = ScorerLoading(path, family="qwen", compile=mode, device=device, dtype=torch.bfloat16)
t2 = time.perf_counter()
prof = cProfile.Profile()
prof.enable()
scorer = loading.load()
prof.disable()
if device == "cuda":
    torch.cuda.synchronize()
t3 = time.perf_counter()
text = io.StringIO()
pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(30)
print(json.dumps({"mode": mode, "import_s": round(t1 - t0, 3), "processor_s": round(t2 - t1, 3),
                  "load_s": round(t3 - t2, 3), "modules_imported_by_load": len(set(sys.modules) - before),
                  "profile": text.getvalue()[-6000:]}))
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--runs", nargs="+", default=["none", "all", "none", "all"])
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from cogip.models.tiny import build_tiny
    model = build_tiny("qwen", out / "tiny_qwen")
    results = []
    for mode in a.runs:
        t = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", CHILD, mode, str(model)], capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"{mode}: {run.stderr[-2000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        result["process_s"] = round(time.perf_counter() - t, 3)
        results.append(result)
        print({k: v for k, v in result.items() if k != "profile"}, flush=True)
    (out / "compile_load_probe.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
