"""What a benchmark run leaves for people: per dimension metrics.json, log.txt and scatter.png, and the
summary (summary.json, summary.png, the printed table)."""

from __future__ import annotations

from pathlib import Path

from ..data.layout import write_atomic, write_json
from ..dims import get_dimension
from ..metrics import compute_metrics

TABLE_NOTE = ("spearman: rank correlation with the human scores (the headline; — where fewer than 3 answers "
              "parsed or all are equal); 95% CI by bootstrap; MAE/MSE in the dimension's score units")


def write_dimension(folder: Path, name: str, records: list[dict], mode: str, seed: int) -> dict:
    """metrics.json, log.txt and scatter.png of one dimension's records (in item order)."""
    metrics = compute_metrics([r["score"] for r in records], [r["reference"] for r in records], get_dimension(name),
                              pred_labels=[r["label"] for r in records], seed=seed)
    metrics["mode"] = mode
    write_json(folder / "metrics.json", metrics)
    write_atomic(folder / "log.txt", "".join(
        f"[{r['index']}] {r['image']}\nPROMPT: {r['prompt']}\nANSWER: {r['answer']}\n"
        f"PARSED: {r['label']} {r['score']}  REFERENCE: {r['reference_label']} {r['reference']}"
        f"{'  PARSE FAILURE: ' + r['error'] if not r['ok'] else ''}\n\n" for r in records))
    scatter_plot(folder / "scatter.png", name, records, metrics)
    return metrics


def write_summary(out: Path, summary: dict) -> None:
    write_json(out / "summary.json", summary)
    summary_plot(out / "summary.png", summary)
    print(format_summary(summary))


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def scatter_plot(path: Path, dim_name: str, records: list[dict], metrics: dict) -> None:
    plt = _pyplot()
    dim = get_dimension(dim_name)
    ok = [r for r in records if r["ok"]]
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter([r["reference"] for r in ok], [r["score"] for r in ok], s=10, alpha=0.6)
    ax.plot([dim.low, dim.high], [dim.low, dim.high], "k--", lw=0.8)
    ax.set_xlim(dim.low, dim.high), ax.set_ylim(dim.low, dim.high)
    rho = metrics["spearman"]
    ax.set_title(f"{dim_name}: ρ={rho:.3f}" if rho is not None else f"{dim_name}: ρ undefined", fontsize=10)
    ax.set_xlabel("human score"), ax.set_ylabel("model score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_plot(path: Path, summary: dict) -> None:
    """Spearman per dimension with its 95% interval; an undefined one is marked, not drawn as 0."""
    plt = _pyplot()
    dims = list(summary)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, d in enumerate(dims):
        rho, (lo, hi) = summary[d]["spearman"], summary[d]["spearman_ci95"]
        if rho is None:
            ax.text(k, 0.05, "undefined\n(too few parsed)", ha="center", va="bottom", fontsize=7, color="#a33")
            continue
        err = [[max(rho - (lo if lo is not None else rho), 0)], [max((hi if hi is not None else rho) - rho, 0)]]
        ax.bar(k, rho, yerr=err, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(dims)), [d.replace("_", "\n") for d in dims])
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(-1, 1), ax.set_ylabel("Spearman ρ (95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_summary(summary: dict) -> str:
    head = f"{'dimension':<18}{'N':>6}{'parsed':>8}{'spearman':>10}{'95% CI':>17}{'pearson':>9}{'MAE':>8}{'MSE':>8}{'label acc':>10}"
    fmt = lambda x, w, p=3: f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{'—':>{w}}"
    rows = [head]
    for d, m in summary.items():
        lo, hi = m["spearman_ci95"]
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None else "—"
        rows.append(f"{d:<18}{m['n']:>6}{m['parse_rate']:>8.1%}{fmt(m['spearman'], 10)}{ci:>17}"
                    f"{fmt(m['pearson'], 9)}{fmt(m['mae'], 8)}{fmt(m['mse'], 8)}{fmt(m.get('label_accuracy'), 10)}")
    return "\n".join(rows + [TABLE_NOTE])
