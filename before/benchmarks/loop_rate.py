"""A benchmark loop's rate once running, and what its start and end cost against that rate, from its
`timing.json` (or a `scaling.json` of several runs): each batch's device time goes with its padded tokens
(`padded_tokens`), so a line fitted to the answered times over the cumulative tokens, from batch `--from` on,
to its last `--tail` (3, the batches in flight as the loop drains), gives seconds per million padded tokens.
Where the line meets zero tokens is what the start cost beyond that rate (compiling, batches that ran alone,
batches in flight filling up); the last batch's distance from the line, what the end cost (the drain).

    python benchmarks/loop_rate.py OUT/timing.json [more.json ...] [--from 15] [--tail 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def loop_rate(timing: dict, first: int = 15, tail: int = 3) -> dict:
    """Seconds per million padded tokens from batch `first` (1-based) to the last `tail` (left out); the
    start's and the end's lag against that rate."""
    tokens, answered = timing.get("padded_tokens"), timing["answered"]
    if not tokens:
        raise ValueError("no padded_tokens in this timing.json (written since 2026-12-07)")
    if len(tokens) != len(answered):
        raise ValueError(f"{len(tokens)} batches taken but {len(answered)} answered")
    if len(tokens) < first + tail + 2:
        raise ValueError(f"{len(tokens)} batches: too few to fit from batch {first} to the last {tail}")
    # answers come in loop order, batches are taken in that order too: the k-th answered is the k-th taken
    done = np.cumsum(tokens) / 1e6
    seconds = np.array([s for s, _ in answered])
    fit = slice(first - 1, len(tokens) - tail)
    slope, start = np.polyfit(done[fit], seconds[fit], 1)
    items = answered[-1][1]
    return {"batches": len(tokens), "items": items, "s_per_mtok": round(float(slope), 3),
            "running_images_per_s": round(items / (slope * done[-1]), 2),
            "start_lag_s": round(float(start), 2), "end_lag_s": round(float(seconds[-1] - (slope * done[-1] + start)), 2),
            "loop_s": round(float(seconds[-1]), 2), "work_at_rate_s": round(float(slope * done[-1]), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--from", dest="first", type=int, default=15, help="first batch of the fit (1-based; 15)")
    p.add_argument("--tail", type=int, default=3, help="last batches left out of the fit (3: the drain)")
    a = p.parse_args(argv)
    for f in a.files:
        data = json.loads(Path(f).read_text())
        runs = {f: data} if "answered" in data else data   # scaling.json: run name -> timing
        for name, timing in runs.items():
            try:
                r = loop_rate(timing, a.first, a.tail)
            except (KeyError, ValueError) as e:
                print(f"{name}: {e}", file=sys.stderr)
                continue
            print(f"{name}: {r['s_per_mtok']} s per million padded tokens ({r['running_images_per_s']} images/s "
                  f"running); loop {r['loop_s']} s = {r['work_at_rate_s']} s at that rate + {r['start_lag_s']} s start "
                  f"+ {r['end_lag_s']} s end; {r['items']} items in {r['batches']} batches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
