"""Speed work, behind one door (docs/performance.md). Two entry points, each applied from one line in the core:

- scoring: `cogip.accel.scoring.FastEngine`, the engine the benchmark loop runs its batches through
  (`cog_test.sh --accel off`: the loop's plain engine instead);
- training: `cogip.accel.training.TrainingAccel`, applied by `build_trainer` around making the model
  trainable (`finetune_lora.sh --accel off`: the plain transformers/PEFT path).

Nothing here changes an answer or a loss beyond float rounding (tested with accel off and on). Every private
torch/transformers/CPython API used here is one guarded function in `private.py`.
"""
