#!/usr/bin/env bash
# One GPU: sft/llama/finetune_lora.sh with GRAPH_PARTS=language (the language blocks replayed as CUDA graphs,
# with the launcher's one-GPU defaults, or DS_CONFIG=sft/deepspeed/zero2.json) against GRAPH_PARTS=none, LoRA
# dropout off (compiled code draws its own masks).
# Checked: the first step's loss and gradient norm (the same weights; bf16 tolerance). Printed: every step's
# loss (Adam's first steps move each weight by about the learning rate times the sign of its gradient, so
# bf16 noise in near-zero gradients makes later losses differ at real size) and each run's samples/s.
#   bash benchmarks/graph_check.sh           a tiny Llama, 12 steps
#   REAL=1 bash benchmarks/graph_check.sh    Llama-3.2-11B-Vision's architecture with random weights
#                                            (benchmarks/real_model.py), 1120-px images (4 tiles), 10 steps
#   ACCUM=2 bash benchmarks/graph_check.sh   each step accumulates 2 micro-batches of 4 (the launcher's
#                                            default accumulates 32 on one GPU)
set -euxo pipefail
W=${WORK:-/tmp/gc}; rm -rf "$W"
if [ "${REAL:-0}" = 1 ]; then
  python3 benchmarks/real_model.py --family llama "$W/models/llama"
  python3 -m cogip.cli data synth "$W/bench" --n 48 --n-train 40 --size 1120
  steps=10
else
  python3 -m cogip.cli models tiny "$W/models" --family llama --nest
  python3 -m cogip.cli data synth "$W/bench" --n 24 --n-train 16
  steps=12
fi
for parts in none language; do
  env MODEL_ID="$W/models/llama" DATA_PATH="$W/bench/cognition_training.json" REPORT_TO=none NUM_GPUS=1 \
    IMAGE_FOLDER="$W/bench/cognition/cognition_images" GLOBAL_BATCH=$((4 * ${ACCUM:-1})) PER_DEVICE_BATCH=4 LAUNCHER=torchrun \
    GRAPH_PARTS=$parts OUTPUT_DIR="$W/$parts" bash sft/llama/finetune_lora.sh --max_steps $steps --save_strategy no \
    --lora_dropout 0 --disable_tqdm True > "$W/$parts.log" 2>&1
  grep "cogip sft:" "$W/$parts.log"
done
python3 - "$W" "$steps" <<'PY'
import json, re, sys
w, steps = sys.argv[1], int(sys.argv[2])
logged = {p: [{k: float(v) for k, v in re.findall(r"'(loss|grad_norm)': '?([0-9.e+-]+)", line)}
              for line in open(f"{w}/{p}.log") if "'loss'" in line] for p in ("none", "language")}
for p in ("none", "language"):
    print(p, "losses", [round(r["loss"], 4) for r in logged[p]], "grad norms", [r.get("grad_norm") for r in logged[p]])
    print(p, "throughput", json.load(open(f"{w}/{p}/cogip_train.json"))["throughput"])
first = {p: logged[p][0] for p in logged}
gaps = {k: abs(first["none"][k] - first["language"][k]) / abs(first["none"][k]) for k in ("loss", "grad_norm")}
print(f"steps {len(logged['none'])} {len(logged['language'])}; first step relative differences {gaps}")
assert len(logged["none"]) == len(logged["language"]) == steps and max(gaps.values()) < 2e-2
PY
