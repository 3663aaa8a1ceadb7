"""A shortened demo through the users' entry points; the report's numbers must be the run's own."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_demo_report_matches_metrics(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "cogip.demo", "--quick", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = (out / "report.md").read_text()
    rows = re.findall(r"^\| (base|SFT, generate|SFT, expected) \| (\w+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| "
                      r"([^|]+) \| ([\d.]+)% \| (\d+) \|$", report, re.M)
    assert len(rows) == 12
    folders = {"base": "qwen-base", "SFT, generate": "qwen-sft-generate", "SFT, expected": "qwen-sft-expected"}
    for model, dim, rho, ci, mae, mse, parse, n in rows:
        m = json.loads((out / "eval" / folders[model] / dim / "metrics.json").read_text())
        num = lambda s: None if s.strip() == "—" else float(s)
        assert num(rho) == (None if m["spearman"] is None else round(m["spearman"], 3))
        assert num(mae) == (None if m["mae"] is None else round(m["mae"], 3))
        assert float(parse) == round(100 * m["parse_rate"], 1) and int(n) == m["n"] == 8
    for name in ("aesthetics", "funniness", "emotion", "memorability"):
        g = json.loads((out / "generation" / name / "score_summary.json").read_text())
        assert f"| {name} | {g['pairs']} | {g['unscored']} |" in report
        assert (out / "generation" / name / "combined" / "0000_0.png").is_file()
    for script in ("evaluation/qwen/cog_test.sh", "sft/qwen/finetune_lora.sh", "qwen-image/run_batch.sh"):
        assert script in report
    assert (out / "figures/loss_qwen.png").is_file() and (out / "figures/before_after_qwen.png").is_file()
    history = json.loads((out / "sft/qwen/log_history.json").read_text())
    assert any("loss_numeric" in h for h in history)
    assert re.search(r"^\| total \| \d+ \|$", report, re.M)


def test_quick_ablation_tables_each_option_against_the_published_loss(tmp_path):
    out = tmp_path / "ablation"
    run = subprocess.run([sys.executable, "-m", "cogip.demo", "--ablation", "--quick", "--seeds", "1", "2",
                          "--variants", "uniform", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rho = json.loads((out / "ablation.json").read_text())
    assert sorted(rho) == ["published-1", "published-2", "uniform-1", "uniform-2"]
    # each run trained with its own loss: the launcher's flags reached the trainer
    kernels = {tag: json.loads((out / "sft" / tag / "cogip_train.json").read_text())["loss"]["soft_kernel"]
               for tag in rho}
    assert kernels == {"published-1": "published", "published-2": "published", "uniform-1": "uniform",
                       "uniform-2": "uniform"}
    table = (out / "ablation.md").read_text()
    diff = lambda d, s: (rho[f"uniform-{s}"][d] or 0) - (rho[f"published-{s}"][d] or 0)
    for d in ("Aesthetics", "Funniness", "Emotional_Valence", "Memorability"):
        assert f"({(diff(d, 1) + diff(d, 2)) / 2:+.3f} [" in table.split("| uniform |")[1].split("\n")[0]
