"""The embedded default, end to end on a CPU: `python -m cogip.demo --out runs/demo`.

Runs the users' own entry points — `cog_test.sh`, `finetune_lora.sh`, `run_batch.sh` — on a synthetic
bench and tiny offline models, then writes OUT/report.md with figures: metrics before and after SFT,
the loss curve, scatter plots, the generation comparison, the command behind every number and the
time of each stage. `--ablation` instead reruns SFT + evaluation with the published soft-label loss and
with each option (other kernels, soft labels on multi-digit tokens, plain cross-entropy) over several
seeds, and tables each option's difference from the published loss with a confidence interval.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from .models.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
DIMS = ("Aesthetics", "Funniness", "Emotional_Valence", "Memorability")
TINY_PIXELS = {"MIN_PIXELS": "7056", "MAX_PIXELS": "7056"}   # 84x84: the tiny Qwen's native size


_BAR = re.compile(r"\d+%\|")   # a tqdm bar: "answering (generate):  50%|█████     | 8/16 [00:04<00:04, ...]"


def _follow(stream, log, stage: str) -> None:
    """A stage's output: into its log line by line (a progress bar's redraws, separated by carriage returns,
    kept as its last state), and its progress bars onto the console, redrawn in place with their ETA."""
    shown, line = False, ""
    while chunk := os.read(stream.fileno(), 65536):
        for k, piece in enumerate(re.split(r"(\r|\n)", chunk.decode("utf-8", "replace"))):
            if piece == "\n":
                log.write(line + "\n")
                line = ""
            elif piece == "\r":
                if _BAR.search(line):   # a bar's redraw: onto the console, and only its last state into the log
                    width = shutil.get_terminal_size((100, 20)).columns - 1
                    sys.stdout.write("\r" + f"  [{stage}] {line.strip()}"[:width].ljust(width))
                    sys.stdout.flush()
                    shown, line = True, ""
            else:
                line += piece
    if line:
        log.write(line + "\n")
    if shown:
        sys.stdout.write("\n")


class Stages:
    """Runs commands, records each one (as a user would type it) and its duration."""

    def __init__(self, out: Path):
        self.out, self.log, self.times = out, [], {}
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, stage: str, name: str, cmd: list[str], env: dict | None = None) -> None:
        shown = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items())
        shown = (shown + " " if shown else "") + " ".join(shlex.quote(str(c)) for c in cmd)
        print(f"[{stage}] {shown}", flush=True)
        t = time.perf_counter()
        with open(self.out / "logs" / f"{name}.log", "w") as log:
            proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env={**os.environ, **(env or {})},
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            _follow(proc.stdout, log, stage)
            code = proc.wait()
        took = time.perf_counter() - t
        self.times[stage] = self.times.get(stage, 0.0) + took
        self.log.append({"stage": stage, "name": name, "command": shown, "seconds": round(took, 1)})
        if code != 0:
            tail = (self.out / "logs" / f"{name}.log").read_text().splitlines()[-15:]
            raise SystemExit(f"demo: step {name} failed (exit {code}); log {self.out}/logs/{name}.log:\n" + "\n".join(tail))


def _py() -> str:
    return sys.executable


def sft(stages, stage, name, family, model, bench, out, epochs, seed=42, extra_flags=None, log_every=10):
    env = {"MODEL_ID": model, "DATA_PATH": f"{bench}/cognition_training.json",
           "IMAGE_ROOT": f"{bench}/cognition/cognition_images", "OUT": out, "NUM_GPUS": "0",
           "GLOBAL_BATCH": "16", "PER_DEVICE_BATCH": "16", **TINY_PIXELS}
    flags = {"--report_to": "tensorboard", "--tune_mode": "full", "--learning_rate": "3e-3", "--vision_lr": "3e-3",
             "--merger_lr": "3e-3", "--num_train_epochs": str(epochs), "--save_steps": "1000000", "--seed": str(seed),
             "--logging_steps": str(log_every), **(extra_flags or {})}
    stages.run(stage, name, ["bash", f"sft/{family}/finetune_lora.sh", *[x for kv in flags.items() for x in kv]], env)


def evaluate(stages, stage, name, family, model, bench, out, mode):
    env = {"MODEL_ID": model, "TEST_DIR": f"{bench}/test_msg_file", "IMAGE_ROOT": f"{bench}/cognition/cognition_images",
           "OUT": out, "NUM_GPUS": "0", "SAMPLE_N": "0", "MODE": mode, "BATCH_SIZE": "16", **TINY_PIXELS}
    stages.run(stage, name, ["bash", f"evaluation/{family}/cog_test.sh"], env)
    return json.loads(Path(out, "summary.json").read_text())


def loss_plot(history_file: Path, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    hist = [h for h in json.loads(history_file.read_text()) if "loss" in h and "loss_regular" in h]
    steps = [h["step"] for h in hist]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, [h["loss"] for h in hist], label="total")
    ax.plot(steps, [h["loss_regular"] for h in hist], label="regular tokens")
    ax.plot(steps, [h["loss_numeric"] for h in hist], label="number tokens (soft)")
    ax.set_xlabel("step"), ax.set_ylabel("loss per supervised token"), ax.set_yscale("log"), ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def before_after_plot(before: dict, after: dict, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    x = np.arange(len(DIMS))
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for off, (label, s), color in zip((-0.2, 0.2), (("base", before), ("after SFT", after)), ("#999999", "#4c72b0")):
        for k, d in enumerate(DIMS):   # an undefined ρ (too few answers parsed) is marked, not drawn as 0
            r, (lo, hi) = s[d]["spearman"], s[d]["spearman_ci95"]
            if r is None:
                ax.text(x[k] + off, 0.03, "undefined", rotation=90, ha="center", va="bottom", fontsize=7, color="#a33")
                continue
            err = [[r - (lo if lo is not None else r)], [(hi if hi is not None else r) - r]]
            ax.bar(x[k] + off, r, 0.4, yerr=err, capsize=3, color=color, label=label if k == 0 else None)
    ax.set_xticks(x, [d.replace("_", "\n") for d in DIMS]), ax.set_ylim(-1, 1), ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("Spearman ρ (95% CI)"), ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _fmt(x, p=3):
    """p decimals, or as many significant digits as show a small value (0.0003, not 0.000); — for undefined."""
    if x is None:
        return "—"
    return f"{x:.{p}f}" if x == 0 or abs(x) >= 10 ** -p else f"{x:.1e}"


def _ci(m):
    lo, hi = m["spearman_ci95"]
    return "—" if lo is None else f"[{lo:.2f}, {hi:.2f}]"


def metrics_table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| model | dimension | Spearman ρ | 95% CI | MAE | MSE | parse rate | N |", "|" + " --- |" * 8]
    for label, summary in rows:
        for d in DIMS:
            m = summary[d]
            lines.append(f"| {label} | {d} | {_fmt(m['spearman'])} | {_ci(m)} | {_fmt(m['mae'])} | {_fmt(m['mse'])} | "
                         f"{m['parse_rate']:.1%} | {m['n']} |")
    return "\n".join(lines)


def run_demo(out: Path, n: int, n_train: int, epochs: int, families: list[str], gen_steps: int,
             log_every: int = 10) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    st = Stages(out)
    bench, models = out / "bench", out / "models"
    st.run("1 build", "synth", [_py(), "-m", "cogip.cli", "data", "synth", bench, "--n", n, "--n-train", n_train])
    st.run("1 build", "models", [_py(), "-m", "cogip.cli", "models", "tiny", models, "--family", *families, "--nest"])
    results = {}
    for fam in families:
        base = evaluate(st, "2 score base", f"eval-{fam}-base", fam, models / fam, bench, out / "eval" / f"{fam}-base",
                        "generate")
        sft(st, "3 fine-tune", f"sft-{fam}", fam, models / fam, bench, out / "sft" / fam, epochs, log_every=log_every)
        after = {mode: evaluate(st, "4 score SFT", f"eval-{fam}-sft-{mode}", fam, out / "sft" / fam, bench,
                                out / "eval" / f"{fam}-sft-{mode}", mode) for mode in ("generate", "expected")}
        results[fam] = {"base": base, **{f"sft_{m}": s for m, s in after.items()}}
    # generation: the tiny Qwen-Image pipeline around the base tiny Qwen, vs the SFT'd one
    st.run("5 generate", "qwen-image-pipeline", [_py(), "-m", "cogip.cli", "models", "tiny-qwen-image",
                                                 out / "qwen_image", "--encoder", models / "qwen"])
    sft_qwen = out / "sft" / "qwen"
    st.run("5 generate", "run_batch", ["bash", "qwen-image/run_batch.sh", "--device", "cpu"],
           {"PIPELINE": out / "qwen_image", "ALIGNED": sft_qwen, "OUT": out / "generation", "SIZE": "32",
            "STEPS": str(gen_steps), "DTYPE": "float32", "SCORE_WITH": sft_qwen, "SCORE_PROMPT": "short"})
    write_report(out, st, results, families)
    return out / "report.md"


def write_report(out: Path, st: Stages, results: dict, families: list[str]) -> None:
    fig = out / "figures"
    fig.mkdir(exist_ok=True)
    loss_plot(out / "sft" / "qwen" / "log_history.json", fig / "loss_qwen.png")
    parts = ["# CogIP demo report", "",
             "Synthetic bench + tiny offline models on the CPU, through the users' own entry points "
             "(`cog_test.sh`, `finetune_lora.sh`, `run_batch.sh`). Every number below is read from the run's own "
             "metrics files under this folder.", "",
             "How to read the tables: **Spearman ρ** is the rank correlation between the model's scores and the "
             "human ones (1: the same order; the benchmark's headline). **generate** reads the score from the "
             "number the model writes; **expected** from its probabilities over the digits (an expected value). "
             "**—** means undefined: fewer than 3 answers parsed, or all scores equal. MAE and MSE are in the "
             "dimension's own units (Aesthetics and Funniness 0–10, Emotional Valence −3..3, Memorability 0–1).", ""]
    for fam in families:
        r = results[fam]
        before_after_plot(r["base"], r["sft_generate"], fig / f"before_after_{fam}.png")
        parts += [f"## {fam}: before and after SFT", "",
                  metrics_table([("base", r["base"]), ("SFT, generate", r["sft_generate"]),
                                 ("SFT, expected", r["sft_expected"])]), "",
                  f"![before/after](figures/before_after_{fam}.png)", ""]
    parts += ["## Training loss (qwen)", "", "![loss](figures/loss_qwen.png)", "",
              "Scatter plots (predicted vs human), SFT model, generate mode: " +
              ", ".join(f"[{d}](eval/qwen-sft-generate/{d}/scatter.png)" for d in DIMS), "",
              "## Generation: default vs aligned text encoder", "",
              "Tiny Qwen-Image pipeline (random weights, 32×32, so the images themselves are noise-like); each image "
              "scored on its prompt set's trait by the SFT model. Unscored images are answers that did not parse "
              "(recorded in scores.csv, never replaced by a made-up score).", "",
              "| prompt set | pairs | unscored images | mean default | mean aligned | aligned − default | 95% CI | "
              "aligned wins |", "|" + " --- |" * 8]
    for s in ("aesthetics", "funniness", "emotion", "memorability"):
        g = json.loads((out / "generation" / s / "score_summary.json").read_text())
        lo, hi = g["difference_ci95"]
        parts.append(f"| {s} | {g['pairs']} | {g['unscored']} | {_fmt(g['mean_default'])} | {_fmt(g['mean_aligned'])} | "
                     f"{_fmt(g['mean_difference'])} | {'—' if lo is None else f'[{_fmt(lo)}, {_fmt(hi)}]'} | "
                     f"{_fmt(g['win_rate_aligned'], 2)} |")
    parts += ["", "Side by side: " + ", ".join(f"[{s}](generation/{s}/combined/0000_0.png)"
                                             for s in ("aesthetics", "funniness", "emotion", "memorability")), "",
              "## Time per stage", "", "| stage | seconds |", "| --- | --- |"]
    parts += [f"| {k} | {v:.0f} |" for k, v in st.times.items()]
    parts += [f"| total | {sum(st.times.values()):.0f} |", "", "## Commands", "", "```"]
    parts += [f"# {c['name']} ({c['seconds']} s)\n{c['command']}" for c in st.log]
    parts += ["```", ""]
    (out / "report.md").write_text("\n".join(parts))
    (out / "demo_results.json").write_text(json.dumps({"results": results, "stages": st.times, "commands": st.log},
                                                      indent=2))


# the published loss and its options (cogip/loss.py), as the launcher's environment sets them
ABLATION = {
    "published": {},
    "narrow-triangle": {"--soft_kernel": "narrow-triangle"},
    "gaussian": {"--soft_kernel": "gaussian"},
    "uniform": {"--soft_kernel": "uniform"},
    "multidigit": {"--soft_multidigit": "True"},   # changes something only where multi-digit tokens exist (Llama)
    "plain-ce": {"--soft_labels": "False"},
}


def run_ablation(out: Path, n: int, n_train: int, epochs: int, seeds: list[int], variants: list[str],
                 family: str = "qwen") -> Path:
    """Each variant's Spearman ρ per dimension and seed; each option against the published loss: the mean
    of the per-seed differences, with a t-interval over seeds."""
    import numpy as np
    from scipy import stats
    out.mkdir(parents=True, exist_ok=True)
    st = Stages(out)
    bench, model = out / "bench", out / "models" / family
    st.run("build", "synth", [_py(), "-m", "cogip.cli", "data", "synth", bench, "--n", n, "--n-train", n_train])
    st.run("build", "models", [_py(), "-m", "cogip.cli", "models", "tiny", model, "--family", family])
    variants = ["published", *[v for v in variants if v != "published"]]
    rho = {}
    for variant in variants:
        for seed in seeds:
            tag = f"{variant}-{seed}"
            sft(st, "fine-tune", f"sft-{tag}", family, model, bench, out / "sft" / tag, epochs, seed=seed,
                extra_flags=ABLATION[variant])
            s = evaluate(st, "score", f"eval-{tag}", family, out / "sft" / tag, bench, out / "eval" / tag, "generate")
            rho[variant, seed] = {d: s[d]["spearman"] for d in DIMS}
    mean = lambda v, d: np.mean([rho[v, s][d] or 0 for s in seeds])
    lines = ["# Ablation: the published soft-label loss and its options", "",
             f"Tiny {family}, synthetic bench ({n_train} training items per dimension), {epochs} epochs, seeds "
             f"{seeds}; Spearman ρ on the test split (an undefined ρ counts as 0). For each option: mean ρ, and "
             "option − published per seed, mean with a 95% t-interval over seeds.", "",
             "| variant | " + " | ".join(DIMS) + " |", "| --- |" + " --- |" * len(DIMS)]
    for v in variants:
        cells = []
        for d in DIMS:
            if v == "published":
                cells.append(f"{mean(v, d):.3f}")
                continue
            diff = np.array([(rho[v, s][d] or 0) - (rho["published", s][d] or 0) for s in seeds])
            half = (stats.t.ppf(0.975, len(seeds) - 1) * diff.std(ddof=1) / np.sqrt(len(seeds))
                    if len(seeds) > 1 else float("nan"))
            cells.append(f"{mean(v, d):.3f} ({diff.mean():+.3f} [{diff.mean() - half:+.3f}, {diff.mean() + half:+.3f}])")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    (out / "ablation.json").write_text(json.dumps({f"{k[0]}-{k[1]}": v for k, v in rho.items()}, indent=2))
    print("\n".join(lines))
    return out / "ablation.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cogip demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--families", nargs="+", default=["qwen"], choices=tuple(FAMILIES))
    p.add_argument("--n", type=int, default=400, help="synthetic items per dimension")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--gen-steps", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="a short run (CI): few items and steps")
    p.add_argument("--ablation", action="store_true",
                   help="the published soft-label loss against its options (--variants) over --seeds")
    p.add_argument("--variants", nargs="+", choices=list(ABLATION), default=[v for v in ABLATION if v != "multidigit"],
                   help="with --ablation (default: all but multidigit, which changes nothing for Qwen)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    a = p.parse_args(argv)
    log_every = 10
    if a.quick:
        a.n, a.n_train, a.epochs, a.gen_steps, log_every = 24, 16, 2, 2, 1
    t = time.perf_counter()
    if a.ablation:
        path = run_ablation(Path(a.out), a.n, a.n_train, a.epochs, a.seeds, a.variants, a.families[0])
    else:
        path = run_demo(Path(a.out), a.n, a.n_train, a.epochs, a.families, a.gen_steps, log_every)
    print(f"done in {time.perf_counter() - t:.0f} s: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
