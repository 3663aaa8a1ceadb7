"""SFT end to end on the CPU through the users' launchers, with tiny models and the synthetic bench."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import TrainerCallback

from cogip.data.images import open_image
from cogip.errors import CogipError
from cogip.models.families import FAMILIES
from cogip.models.adapters import load_adapted
from cogip.train.merge import merge
from cogip.train.sft import run
from recorders import StepRecord

ROOT = Path(__file__).resolve().parents[1]


def _env(model, bench, out, **extra):
    env = dict(os.environ, MODEL_ID=str(model), DATA_PATH=str(bench / "cognition_training.json"),
               IMAGE_FOLDER=str(bench / "cognition/cognition_images"), OUTPUT_DIR=str(out), NUM_GPUS="0",
               GLOBAL_BATCH="8", PER_DEVICE_BATCH="8", MIN_PIXELS="7056", MAX_PIXELS="7056")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _finetune(family, model, bench, out, *args, **extra):
    return subprocess.run(["bash", ROOT / "sft" / family / "finetune_lora.sh", *map(str, args)],
                          env=_env(model, bench, out, **extra), capture_output=True, text=True)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_finetune_save_reload_merge_generate(tiny_models, synth_bench, tmp_path, family):
    out = tmp_path / "adapter"
    run = _finetune(family, tiny_models[family], synth_bench, out, "--max_steps", 12, "--learning_rate", 5e-2,
                    "--warmup_steps", 0, "--save_steps", 6)
    assert run.returncode == 0, run.stderr[-3000:]
    history = [h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
    losses = [h["loss"] for h in history]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < losses[0] * 0.9, losses        # loss falls
    assert all(h["loss"] == pytest.approx(h["loss_regular"] + 2.0 * h["loss_numeric"], rel=1e-3) for h in history)
    info = json.loads((out / "cogip_train.json").read_text())
    assert info["family"] == family and info["tune_mode"] == "lora"
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    fam = FAMILIES[family]
    assert any("lora_A" in k for k in keys)
    assert any(fam.param_group(k) == "vision" and "lora" not in k for k in keys)   # vision tower saved too
    assert (out / "checkpoint-6").is_dir() and (out / "checkpoint-12").is_dir()

    adapted, _ = load_adapted(out)
    merged_dir = merge(out, tmp_path / "merged")
    merged = fam.load_model(merged_dir)
    proc = fam.load_processor(merged_dir)
    image = open_image(synth_bench / "cognition/cognition_images/Aesthetics/000001.jpg")
    batch = fam.encode(proc, [fam.chat_prompt(proc, "Aesthetics? label and score 0-10.")], [image],
                       return_tensors="pt")
    with torch.no_grad():
        a, m = adapted(**batch).logits, merged(**batch).logits
        base = fam.load_model(tiny_models[family])(**batch).logits
    # merged == base + adapter, to float32 rounding of the folded weights (logits of magnitude ~4)
    assert torch.allclose(a, m, atol=1e-3), (a - m).abs().max()
    assert (base - m).abs().max() > 0.05     # … and training changed the model
    gen = merged.generate(**batch, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > batch["input_ids"].shape[1]


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


def _args(model, bench, out, *extra):
    return ["--model_id", str(model), "--data_path", str(bench / "cognition_training.json"),
            "--image_folder", str(bench / "cognition/cognition_images"), "--output_dir", str(out),
            "--max_steps", "6", "--per_device_train_batch_size", "4", "--learning_rate", "5e-3",
            "--save_steps", "3", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "True",
            "--seed", "7", "--lr_scheduler_type", "cosine", "--min_pixels", "7056", "--max_pixels", "7056", *extra]


def _weights(folder):
    with safe_open(str(Path(folder) / "adapter_model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_resume_reaches_the_same_weights(tiny_models, synth_bench, tmp_path):
    model = tiny_models["qwen"]
    run(_args(model, synth_bench, tmp_path / "straight"))
    killed = tmp_path / "killed"
    run(_args(model, synth_bench, killed), callbacks=[StopAt(3)])
    assert (killed / "checkpoint-3").is_dir() and not (killed / "adapter_model.safetensors").exists()
    run(_args(model, synth_bench, killed, "--resume_from_checkpoint", "last"))
    a, b = _weights(tmp_path / "straight"), _weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the resumed run reports its loss over all its steps, as the straight one does, not since the resume
    losses = [json.loads((d / "cogip_train.json").read_text())["train_loss"] for d in (tmp_path / "straight", killed)]
    steps = [e["loss"] for e in json.loads((killed / "log_history.json").read_text()) if "loss" in e]
    assert len(steps) > 3 and losses[1] == pytest.approx(sum(steps) / len(steps), rel=1e-9)
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def _parser():
    from transformers import HfArgumentParser, TrainingArguments
    from cogip.accel.training import AccelArguments
    from cogip.train.sft import DataArguments, LossArguments, ModelArguments
    return HfArgumentParser((ModelArguments, DataArguments, LossArguments, AccelArguments, TrainingArguments))


def _recipes(tmp_path, *files):
    """(model, data, loss, accel, training) options as the launchers read these sft/ recipe files, on the CPU."""
    from cogip.train.sft import read_recipes
    parser = _parser()
    return parser.parse_args_into_dataclasses(read_recipes(parser, [
        "--recipe", *(str(ROOT / "sft" / f) for f in files), "--output_dir", str(tmp_path), "--use_cpu", "True"]))


class OutOfMemoryAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 184.00 MiB.")


def test_out_of_memory_is_one_line_and_the_checkpoints_stay(tiny_models, synth_bench, tmp_path):
    out = tmp_path / "oom"
    with pytest.raises(CogipError, match=r"out of GPU memory in step 4 at 4 samples a device, recomputing vision: "
                                         r"give --checkpoint_parts all .* --resume_from_checkpoint last") as e:
        run(_args(tiny_models["qwen"], synth_bench, out, "--activation_checkpointing", "True",
                  "--checkpoint_parts", "vision"), callbacks=[OutOfMemoryAt(3)])
    assert e.value.file == str(out) and "\n" not in str(e.value)
    assert (out / "checkpoint-3").is_dir() and not (out / "adapter_model.safetensors").exists()
    run(_args(tiny_models["qwen"], synth_bench, out, "--resume_from_checkpoint", "last"))
    assert json.loads((out / "cogip_train.json").read_text())["global_step"] == 6


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("card_gib", [47.5, 79.2])
def test_recompute_everything_on_a_card_too_small_for_the_recipe(family, card_gib, monkeypatch, tmp_path):
    """The family's GPU recipe recomputes what was measured fastest on an 80 GB card; a card with less memory
    than that needed recomputes every block (the least memory), and the start line says why."""
    from types import SimpleNamespace
    from cogip.accel.training import TrainingAccel
    accel, targs = _recipes(tmp_path, "gpu.yaml", f"{family}/gpu.yaml")[3:]
    measured = accel.checkpoint_parts
    assert 50 < accel.checkpoint_parts_needs_gib < 79.2   # fits an 80 GB card, not a 48 GB one
    card = SimpleNamespace(activation_checkpointing=True, device=torch.device("cuda", 0), fsdp=None,
                           deepspeed=None, use_liger_kernel=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=card_gib * 2 ** 30))
    speed = TrainingAccel(accel, FAMILIES[family], card)
    small = card_gib < accel.checkpoint_parts_needs_gib
    assert accel.checkpoint_parts == ("all" if small else measured)
    line = speed.line()
    if small:
        assert (f"recompute all ({measured} needs ~{accel.checkpoint_parts_needs_gib:g} GiB, this card has "
                f"{card_gib}; --checkpoint_parts_needs_gib 0 keeps {measured})") in line
        assert speed.graphed == set()   # Llama's graphed language blocks would be recomputed: they step aside
    else:
        assert f"recompute {measured};" in line
        assert speed.graphed == ({"language"} if family == "llama" else set())
    # on the CPU, and with the check off, the recipe's parts stay
    accel.checkpoint_parts = measured
    assert TrainingAccel(accel, FAMILIES[family], targs).o.checkpoint_parts == measured
    accel.checkpoint_parts_needs_gib = 0
    assert TrainingAccel(accel, FAMILIES[family], card).o.checkpoint_parts == measured


def test_full_finetune_and_param_group_lrs(tiny_models, synth_bench, tmp_path):
    trainer = run(_args(tiny_models["gemma"], synth_bench, tmp_path / "full", "--tune_mode", "full",
                        "--vision_lr", "1e-4", "--merger_lr", "3e-4", "--max_steps", "2", "--warmup_steps", "0",
                        "--lr_scheduler_type", "constant"))
    fam = FAMILIES["gemma"]
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for group in trainer.optimizer.param_groups:
        kinds = {fam.param_group(names[id(p)]) for p in group["params"]}
        assert len(kinds) == 1
        assert group["lr"] == {"language": 5e-3, "vision": 1e-4, "projector": 3e-4}[kinds.pop()]
    assert (tmp_path / "full" / "model.safetensors").is_file()
    assert fam.load_model(tmp_path / "full") is not None


def test_missing_image_stops_before_training(tiny_models, synth_bench, tmp_path):
    import shutil
    bench = tmp_path / "bench"
    shutil.copytree(synth_bench, bench)
    (bench / "cognition/cognition_images/Memorability/000004.jpg").write_bytes(b"not a jpeg")
    run_ = _finetune("qwen", tiny_models["qwen"], bench, tmp_path / "out", "--max_steps", 1)
    assert run_.returncode == 2
    assert "Memorability/000004.jpg" in run_.stderr and "cannot be decoded" in run_.stderr
    assert "Traceback" not in run_.stderr and not (tmp_path / "out" / "checkpoint-1").exists()


def test_adapter_for_another_base_fails_loudly(tiny_models, synth_bench, tmp_path):
    run(_args(tiny_models["qwen"], synth_bench, tmp_path / "a", "--max_steps", "1"))
    with pytest.raises(CogipError, match="does not fit base model"):
        load_adapted(tmp_path / "a", base=str(tiny_models["gemma"]))


class BlockProbe(TrainerCallback):
    """Records, at the first step, which repeated blocks recompute."""

    def __init__(self):
        self.seen = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        from cogip.accel.blocks import repeated_blocks
        if self.seen is None:
            self.seen = {}
            for _, block, part in repeated_blocks(model, FAMILIES["llama"]):
                on = block.gradient_checkpointing if hasattr(block, "_gradient_checkpointing_func") \
                    else getattr(block, "_cogip_checkpoint", False)
                self.seen.setdefault(part, set()).add(bool(on))
                if on:   # what a recomputing block keeps: None, or selective checkpointing's context
                    self.seen.setdefault("kept", set()).add(getattr(block, "_cogip_context_fn", None) is not None)


def test_checkpoint_parts_and_throughput_record(tiny_models, synth_bench, tmp_path):
    probe = BlockProbe()
    run(_args(tiny_models["llama"], synth_bench, tmp_path / "parts", "--activation_checkpointing", "True",
              "--checkpoint_parts", "vision", "--checkpoint_keep", "attention", "--max_steps", "4",
              "--profile_step", "3"), callbacks=[probe])
    assert probe.seen == {"language": {False}, "vision": {True}, "kept": {True}}   # Mllama's vision layers included
    info = json.loads((tmp_path / "parts" / "cogip_train.json").read_text())
    assert info["accel"]["checkpoint_parts"] == "vision" and info["accel"]["checkpoint_keep"] == "attention"
    assert info["kernels"] == "transformers"
    speed = info["throughput"]
    assert speed["steps_timed"] == 2 and speed["median_step_samples_per_s"] == pytest.approx(
        speed["samples_per_step"] / speed["median_step_s"], rel=1e-2)
    # over the run: every step's samples over training's wall time, which holds more than the median steps
    assert speed["steps"] == 4 and speed["samples_per_s"] == pytest.approx(
        4 * speed["samples_per_step"] / speed["train_s"], rel=1e-2)
    assert speed["train_s"] > 2 * speed["median_step_s"]
    report = (tmp_path / "parts" / "profile_rank0.txt").read_text()
    assert report.startswith("step 3, rank 0/1")
    timeline = json.loads(report.split("timeline: ", 1)[1].split("\n\n", 1)[0])
    assert 0 < timeline["wall_ms"] < 1000 * 10 * speed["median_step_s"]   # one step, not the run
    assert "aten::mm" in report   # the operators table
    with pytest.raises(CogipError, match="checkpointing parts"):
        run(_args(tiny_models["llama"], synth_bench, tmp_path / "bad", "--checkpoint_parts", "projector"))
    with pytest.raises(CogipError, match="vision=N\\+M"):
        run(_args(tiny_models["llama"], synth_bench, tmp_path / "bad", "--checkpoint_parts", "vision=1+two"))
    with pytest.raises(CogipError, match="asks for 4 blocks, but the model has 3 vision blocks"):
        run(_args(tiny_models["llama"], synth_bench, tmp_path / "bad", "--activation_checkpointing", "True",
                  "--checkpoint_parts", "vision=2+2", "--max_steps", "1"))
    with pytest.raises(CogipError, match="can keep none or attention"):
        run(_args(tiny_models["llama"], synth_bench, tmp_path / "bad", "--checkpoint_keep", "mlp"))
    with pytest.raises(CogipError, match="FSDP needs GPUs"):
        run(_args(tiny_models["llama"], synth_bench, tmp_path / "bad", "--fsdp", "--fsdp_config",
                  str(ROOT / "sft" / "fsdp" / "fsdp2.json")))


@pytest.mark.parametrize("family,gpus,env", [
    ("llama", 1, {}), ("llama", 2, {"LAUNCHER": "torchrun", "MASTER_PORT": "29610"}), ("qwen", 1, {}),
    ("gemma", 1, {}), ("gemma", 2, {})])
def test_gpu_launcher_defaults(tmp_path, family, gpus, env):
    # the GPU branch of sft/common.sh, its command printed instead of run
    run = subprocess.run(["bash", ROOT / "sft" / family / "finetune_lora.sh"], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": "echo", "NUM_GPUS": str(gpus), "LAUNCHER": "python",
                              "OUT": str(tmp_path), **env})
    assert run.returncode == 0, run.stderr
    args = run.stdout.split()
    if env.get("LAUNCHER") == "torchrun":   # a second run on the same host rendezvous elsewhere
        assert args[:6] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29610"]
    # the published recipe, then the GPU settings, shared and the family's where it has them
    recipes = args[args.index("--recipe") + 1:args.index("--data_path")]
    expected = ["recipe.yaml", f"{family}/recipe.yaml", "gpu.yaml", f"{family}/gpu.yaml"]
    assert recipes == [str(ROOT / "sft" / r) for r in expected]
    # ZeRO-2 on several GPUs; on one, Llama's and Gemma's measured default is no DeepSpeed, Qwen's ZeRO-2
    deepspeed = args[args.index("--deepspeed") + 1] if "--deepspeed" in args else None
    one_gpu_zero = family == "qwen"
    assert deepspeed == (str(ROOT / "sft" / "deepspeed" / "zero2.json") if gpus > 1 or one_gpu_zero else None)


def test_recipes_hold_each_published_value_once(tmp_path):
    """The recipe files read as the launchers read them: the published values, each from one place (the option
    defaults, or the one recipe file that holds it), and a key that is no option is one line naming the file."""
    from cogip.train.sft import read_recipes
    for family, lr, beta2, eta in (("qwen", 3e-5, 0.999, 0.15), ("llama", 9e-5, 0.95, 0.08), ("gemma", 1e-5, 0.95, 0.15)):
        m, _, loss, accel, t = _recipes(tmp_path, "recipe.yaml", f"{family}/recipe.yaml", "gpu.yaml")
        assert (m.family, t.learning_rate, t.adam_beta2, loss.soft_eta, loss.soft_lambda) == (family, lr, beta2, eta, 2.0)
        assert (m.lora_r, m.lora_alpha, m.vision_lr, m.merger_lr, t.weight_decay, t.lr_scheduler_type) == (
            64, 64, 2e-6, 1e-5, 0.1, "cosine")
        assert t.bf16 and t.activation_checkpointing and accel.accel == "on"
        # each family's measured recompute on one 80 GB card (docs/performance.md)
        accel = _recipes(tmp_path, "gpu.yaml", f"{family}/gpu.yaml")[3]
        assert accel.checkpoint_parts == {"qwen": "vision", "llama": "vision", "gemma": "none"}[family]
    texts = {p: p.read_text() for p in (ROOT / "sft").rglob("*.yaml")}
    for key in ("soft_lambda", "vision_lr:", "lora_r", "min_pixels"):   # defaults of the options, not recipe lines
        assert [str(p) for p, t in texts.items() if key in t and "grpo" not in p.name] == [], key
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 1e-5\n")
    with pytest.raises(CogipError, match="bad.yaml: 'learning_rat' is not an option of cogip train"):
        read_recipes(_parser(), ["--recipe", str(bad)])


class ModelProbe(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model


class LossProbe(ModelProbe):
    """The model at the start, and every logged loss."""

    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def test_graph_parts_train_like_eager(tiny_models, synth_bench, tmp_path):
    """Llama's language blocks compiled whole for CUDA graphs (on a CPU: compiled, no graphs): the same
    losses as eager over accumulated micro-batches, sequences padded to a multiple of 64, the trained
    parameters' gradients copied out of the graphs' outputs; bad combinations are one error line."""
    from cogip.accel.blocks import GRAPH_PAD_MULTIPLE, repeated_blocks
    from cogip.train.data import SFTCollator
    from torch._dynamo.utils import counters
    runs, graphs_before = {}, counters["stats"]["unique_graphs"]
    for name, extra in (("eager", []), ("graphs", ["--graph_parts", "language"])):
        probe = LossProbe()
        trainer = run(_args(tiny_models["llama"], synth_bench, tmp_path / name, "--max_steps", "3", "--logging_steps",
                            "1", "--save_strategy", "no", "--learning_rate", "1e-2", "--lora_dropout", "0",
                            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2", *extra),
                      callbacks=[probe])
        compiled = {part: [getattr(b, "_compiled_call_impl", None) is not None
                           for _, b, p in repeated_blocks(probe.model, FAMILIES["llama"]) if p == part]
                    for part in ("language", "vision")}
        hooked = _language_gradients_copied(probe.model)
        assert hooked and all(hooked) == (name == "graphs")
        runs[name] = probe.losses, compiled, trainer.data_collator
    (eager, eager_compiled, eager_collator), (graphs, graphs_compiled, collator) = runs["eager"], runs["graphs"]
    assert len(eager) == 3 and graphs == pytest.approx(eager, rel=1e-4)
    assert counters["stats"]["unique_graphs"] > graphs_before   # the compiled blocks ran, not eager fallbacks
    assert not any(eager_compiled["language"]) and all(graphs_compiled["language"]) and len(graphs_compiled["language"]) > 1
    assert not any(graphs_compiled["vision"])
    assert isinstance(collator, SFTCollator) and collator.pad_to_multiple_of == GRAPH_PAD_MULTIPLE
    assert eager_collator.pad_to_multiple_of is None
    rows = [trainer.train_dataset[i] for i in range(3)]
    assert collator(rows)["input_ids"].shape[1] % GRAPH_PAD_MULTIPLE == 0
    with pytest.raises(CogipError, match="overlaps the checkpointed parts \\(language\\)"):
        run(_args(tiny_models["llama"], synth_bench, tmp_path / "bad", "--graph_parts", "language",
                  "--activation_checkpointing", "True", "--checkpoint_parts", "all"))
    with pytest.raises(CogipError, match="graph parts must be all, none or a subset"):
        run(_args(tiny_models["llama"], synth_bench, tmp_path / "bad", "--graph_parts", "decoder"))


def _language_gradients_copied(model) -> list[bool]:
    """For each trained parameter of Llama's language blocks: whether its gradient gets copied (a hook)."""
    from cogip.accel.blocks import repeated_blocks
    return [bool(p._backward_hooks) for _, b, part in repeated_blocks(model, FAMILIES["llama"]) if part == "language"
            for p in b.parameters() if p.requires_grad]


def test_graphed_gradients_copied_only_when_accumulating(tiny_models):
    """Copies of a graphed block's parameter gradients (which its next replay overwrites) are made only where
    micro-batches accumulate into them; otherwise the optimizer consumes them first."""
    from cogip.accel.blocks import graph_blocks
    from cogip.train.sft import ModelArguments, prepare_trainable
    fam = FAMILIES["llama"]
    for accumulate in (False, True):
        model = prepare_trainable(fam.load_model(tiny_models["llama"], dtype=torch.float32), fam,
                                  ModelArguments(model_id="x"))
        assert graph_blocks(model, fam, "language", accumulate=accumulate) > 1
        hooked = _language_gradients_copied(model)
        assert hooked and set(hooked) == {accumulate}


def test_graph_parts_refused_where_they_cannot_run(capsys):
    """--graph_parts is one error line over checkpointed parts, and under ZeRO-3 or FSDP, or with
    --graph_parts_fallback one printed line and no graphs; gradient accumulation is allowed (the graphed blocks'
    gradients are copied: test_graphed_gradients_copied_only_when_accumulating)."""
    from transformers import TrainingArguments
    from cogip.accel.training import AccelArguments, TrainingAccel
    llama = FAMILIES["llama"]
    graph_parts_that_run = lambda options, targs: TrainingAccel(options, llama, targs).graphed
    ModelArguments = AccelArguments
    targs = TrainingArguments(output_dir="unused", use_cpu=True, activation_checkpointing=True, report_to=[])
    assert graph_parts_that_run(ModelArguments(graph_parts="language", checkpoint_parts="vision"), targs) == {"language"}
    for parts in ("all", "language=1"):
        with pytest.raises(CogipError, match="overlaps the checkpointed parts"):
            graph_parts_that_run(ModelArguments(graph_parts="language", checkpoint_parts=parts), targs)
    fsdp = TrainingArguments(output_dir="unused", use_cpu=True, fsdp="full_shard", report_to=[])
    with pytest.raises(CogipError, match="cannot run under ZeRO-3 or FSDP"):
        graph_parts_that_run(ModelArguments(graph_parts="language"), fsdp)
    accumulating = TrainingArguments(output_dir="unused", use_cpu=True, gradient_accumulation_steps=2, report_to=[])
    assert graph_parts_that_run(ModelArguments(graph_parts="language"), accumulating) == {"language"}
    # the launchers' family default: no graphs where they cannot run, and one line that says why
    assert graph_parts_that_run(ModelArguments(graph_parts="language", graph_parts_fallback=True), fsdp) == set()
    assert "training without CUDA graphs: --graph_parts cannot run under ZeRO-3 or FSDP" in capsys.readouterr().err


def test_one_process_on_a_multi_gpu_node_trains_its_own_batch(tiny_models, synth_bench, tmp_path, capfd):
    """One process that sees two GPUs (NUM_GPUS=1 on a larger node): Trainer's own mode there is DataParallel,
    with micro-batches of per-device batch x GPUs, all of which this trainer would run on one GPU. The trainer
    keeps to one GPU and the asked batch instead, and says so."""
    from transformers import HfArgumentParser, TrainingArguments
    from cogip.train.sft import DataArguments, LossArguments, ModelArguments, build_trainer
    parser = HfArgumentParser((ModelArguments, DataArguments, LossArguments, TrainingArguments))
    margs, dargs, largs, targs = parser.parse_args_into_dataclasses(_args(tiny_models["qwen"], synth_bench, tmp_path))
    assert targs.n_gpu == 0
    targs._n_gpu = 2   # what TrainingArguments finds on a node with two GPUs and no torchrun
    assert targs.train_batch_size == 8
    trainer = build_trainer(margs, dargs, largs, targs)
    assert trainer.args.n_gpu == 1 and trainer.args.train_batch_size == 4
    assert next(iter(trainer.get_train_dataloader()))["input_ids"].shape[0] == 4
    assert "one process sees 2 GPUs" in capfd.readouterr().err


@pytest.mark.parametrize("cast", [True, False])
def test_vision_norm_cast_is_on_by_default(tiny_models, synth_bench, tmp_path, cast):
    from cogip.accel.blocks import repeated_blocks
    probe = ModelProbe()
    run(_args(tiny_models["gemma"], synth_bench, tmp_path, "--max_steps", "1", "--save_strategy", "no",
              *([] if cast else ["--cast_vision_norms", "False"])), callbacks=[probe])
    norms = [c for _, b, part in repeated_blocks(probe.model, FAMILIES["gemma"]) for c in b.children()
             if "Norm" in type(c).__name__ and part == "vision"]
    assert len(norms) == 4 and all(bool(n._forward_hooks) == cast for n in norms)


def test_block_timeline_of_one_step(tiny_models, synth_bench, tmp_path):
    from cogip.accel.blocks import repeated_blocks
    probe = ModelProbe()
    run(_args(tiny_models["qwen"], synth_bench, tmp_path / "tl", "--activation_checkpointing", "True",
              "--checkpoint_parts", "vision", "--max_steps", "3", "--save_strategy", "no", "--timeline_step", "2"),
        callbacks=[probe])
    timed = json.loads((tmp_path / "tl" / "timeline_rank0.json").read_text())
    assert timed["step"] == 2 and timed["world_size"] == 1 and timed["device"] == "cpu"
    names = {part: [n for n, _, p in repeated_blocks(probe.model, FAMILIES["qwen"]) if p == part]
             for part in ("vision", "language")}
    assert len(names["vision"]) > 1 and len(names["language"]) > 1
    summary = timed["summary"]
    # each block once forward and once backward (a checkpointed vision block recomputes without passing its hooks)
    assert {k: v["calls"] for k, v in summary.items()} == {
        "vision forward": len(names["vision"]), "vision backward": len(names["vision"]),
        "language forward": len(names["language"]), "language backward": len(names["language"])}
    assert summary["vision forward"]["first_s"] < summary["language forward"]["first_s"] \
        < summary["language backward"]["first_s"] < summary["vision backward"]["first_s"]   # a step's order
    for part in ("vision", "language"):
        s = summary[f"{part} forward"]
        last_end = max(r["device_s"] for r in timed["rows"] if r["kind"] == "end" and r["block"] in names[part])
        # the forward blocks run one after another: first start to last end = their busy time + the gaps
        assert s["busy_s"] > 0 and s["gap_s"] >= 0
        assert s["busy_s"] + s["gap_s"] == pytest.approx(last_end - s["first_s"], abs=1e-3)
        kinds = [(r["block"], r["kind"]) for r in timed["rows"] if r["block"] in names[part]]
        assert [b for b, k in kinds if k == "forward"] == names[part]
        assert [b for b, k in kinds if k == "backward"] == names[part][::-1]   # backward runs in reverse
    for block in names["vision"] + names["language"]:
        assert [r["kind"] for r in timed["rows"] if r["block"] == block] == ["forward", "end", "backward"]
    # the training thread's host time over the step: the step's own frames hold (nearly) all of it
    host = timed["host_stacks"]
    assert host["samples"] > 0 and host["seconds"] > 0
    inclusive = {name.rsplit(" (", 1)[0]: share for name, _, share in host["inclusive"]}
    assert inclusive.get("training_step", 0) > 0.5 and max(inclusive.values()) <= 1.0


def test_liger_without_the_package_is_one_clear_error(tiny_models, synth_bench, tmp_path):
    import importlib.util
    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here")
    with pytest.raises(CogipError, match="liger-kernel is not installed"):
        run(_args(tiny_models["gemma"], synth_bench, tmp_path / "liger", "--use_liger_kernel", "True"))


def test_transformers_too_old_is_one_clear_line(tiny_models, synth_bench, tmp_path, monkeypatch, capsys):
    import tomllib
    import cogip
    from cogip.train import sft
    deps = tomllib.loads(Path(cogip.__file__).parents[1].joinpath("pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith(cogip.TRANSFORMERS_FLOOR + ",") for d in deps), deps   # one floor, stated once in code
    # a floor above the installed version (as with 5.17, which lacks --activation_checkpointing): one line, exit 2
    monkeypatch.setattr(sft, "TRANSFORMERS_FLOOR", "transformers>=99.0")
    assert sft.main(_args(tiny_models["qwen"], synth_bench, tmp_path / "old")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs transformers>=99.0" in err and "found transformers==" in err, err
    assert not (tmp_path / "old").exists()


FSDP2_BLOCKS = {"qwen": ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"],
                "llama": ["MllamaCrossAttentionDecoderLayer", "MllamaSelfAttentionDecoderLayer", "MllamaVisionEncoderLayer"],
                "gemma": ["Gemma3DecoderLayer", "SiglipEncoderLayer"]}


@pytest.mark.parametrize("family,tune_mode", [(f, "lora") for f in FAMILIES] + [("qwen", "full")])
def test_fsdp2_sharded_loss_and_gradients_match_unsharded(tiny_models, synth_bench, tmp_path, family, tune_mode):
    """FSDP2 as the launcher configures it (sft/fsdp/fsdp2.json, accelerate's wrapping, each repeated block
    a unit): the trainer's loss path gives one process's loss and gradients on two gloo processes."""
    out = tmp_path / "fsdp2.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests" / "fsdp2_worker.py"), str(tiny_models[family]), str(synth_bench),
                           str(ROOT / "sft" / "fsdp" / "fsdp2.json"), str(out), family, tune_mode],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    why = [line for line in proc.stderr.splitlines() if any(k in line for k in ("[rank", "terminate", "Error", "exitcode"))]
    assert proc.returncode == 0, "\n".join(why)[-3000:]
    r = json.loads(out.read_text())
    assert r["blocks"] == FSDP2_BLOCKS[family]
    root = "FSDPPeftModel" if tune_mode == "lora" else f"FSDP{FAMILIES[family].model_cls().__name__}"
    assert {f"FSDP{b}" for b in r["blocks"]} | {root} <= set(r["units"])
    assert r["sharded_params"] == r["params"]                 # nothing left unsharded
    assert r["root_trained"]                                  # trained vision parameters outside every block
    assert r["registered"] and not r["registered_again"]
    assert r["losses"] == [pytest.approx(r["ref_loss"], rel=1e-6)] * 2
    assert r["grad_names_equal"] and r["max_grad"] > 0.1
    assert r["max_grad_diff"] <= 1e-5 * r["max_grad"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_ranks_train_as_one(tiny_models, synth_bench, tmp_path, family):
    """Two DDP ranks (torchrun, gloo) of 2 samples each train as one process of 4 and as one of 2 with two
    accumulated micro-batches: the same logged losses (each part a per-token mean over the whole step) and
    gradient norms, the same gradients, and ranks that end in agreement. Before, the loss path called the
    model past DDP's forward, so the ranks never averaged their gradients; and Llama's loss was halved."""
    common = _args(tiny_models[family], synth_bench, tmp_path, "--max_steps", "2", "--learning_rate", "1e-3",
                   "--lora_dropout", "0", "--save_strategy", "no")
    keys = ("loss", "grad_norm", "loss_regular", "loss_numeric")
    single = {}
    for name, extra in (("one", ["--per_device_train_batch_size", "4"]),
                        ("accumulated", ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"])):
        record = StepRecord()
        run([*common, "--output_dir", str(tmp_path / name), *extra], callbacks=[record])
        single[name] = [{k: r[k] for k in keys} for r in record.logs if "loss" in r], record.grads
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "ddp"), *common,
                           "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "2"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"ddp.rank{r}.pt") for r in (0, 1)]
    (logs, grads), (acc_logs, _) = single["one"], single["accumulated"]
    assert len(logs) == 2
    for other in (acc_logs, [{k: r[k] for k in keys} for r in ranks[0]["logs"] if "loss" in r]):
        for mine, theirs in zip(logs, other, strict=True):
            assert theirs == pytest.approx(mine, rel=1e-4)
    assert ranks[0]["grads"].keys() == ranks[1]["grads"].keys() == grads.keys()
    scale = max(g.abs().max() for g in grads.values())
    for name, g in grads.items():
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name   # averaged: the same on both
        assert (ranks[0]["grads"][name] - g).abs().max() <= 1e-4 * scale, name
    assert [r["agree"] for r in ranks] == [True, True] and [r["agree_after_nudge"] for r in ranks] == [False, False]
    info = json.loads((tmp_path / "two" / "cogip_train.json").read_text())
    assert info["world_size"] == 2 and info["ranks_agree"] is True


class VisionSnapshot(ModelProbe):
    """The trained vision parameters as the run starts, by name."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        super().on_train_begin(args, state, control, model=model, **kwargs)
        fam = FAMILIES["qwen"]
        self.before = {n: p.detach().float().clone() for n, p in model.named_parameters()
                       if p.requires_grad and fam.param_group(n) == "vision" and p.ndim == 2}


@pytest.mark.parametrize("master", [True, False])
def test_bf16_without_deepspeed_trains_fp32_master_weights(tiny_models, synth_bench, tmp_path, monkeypatch, master):
    """A bf16 model trained without DeepSpeed: the trained parameters become float32 master weights, so one
    Adam step at the published vision learning rate (2e-6) moves the vision tower. Without them (master
    False) the same step is lost in the bf16 weights. (Qwen: a random Llama's zero cross-attention gates
    leave its vision tower without gradients.)"""
    import cogip.train.sft as sft
    if not master:
        monkeypatch.setattr(sft, "fp32_master_weights", lambda model, args: None)
    probe = VisionSnapshot()
    trainer = run(_args(tiny_models["qwen"], synth_bench, tmp_path / "run", "--bf16", "True", "--max_steps", "1",
                        "--vision_lr", "2e-6", "--lr_scheduler_type", "constant", "--save_strategy", "no"),
                  callbacks=[probe])
    params = dict(trainer.model.named_parameters())
    trained = {p.dtype for p in params.values() if p.requires_grad}
    assert trained == ({torch.float32} if master else {torch.float32, torch.bfloat16})   # LoRA is fp32 either way
    assert {p.dtype for p in params.values() if not p.requires_grad} == {torch.bfloat16}   # the frozen base stays bf16
    deltas = torch.cat([(params[n].detach().float() - w).flatten() for n, w in probe.before.items()])
    moved = (deltas != 0).float().mean().item()
    if master:   # every weight, by about the learning rate: Adam's first step is lr * sign(gradient)
        assert moved > 0.95 and 1e-6 < deltas.abs().max().item() < 4e-6
    else:   # only weights within a few hundred steps of zero, where bf16 resolves 2e-6
        assert moved < 0.1


@pytest.mark.parametrize("options, trained", [
    (["--train_merger", "False"], {"language-lora", "vision"}),                       # published --freeze_merger
    (["--train_vision", "False", "--train_merger", "False"], {"language-lora"}),      # the LLM through LoRA only
    (["--tune_mode", "frozen-llm"], {"vision", "projector"}),                          # vision + merger only
    (["--use_dora", "True"], {"language-lora", "language-dora", "vision", "projector"}),   # DoRA
])
def test_what_trains_under_each_tuning_option(tiny_models, synth_bench, tmp_path, options, trained):
    fam = FAMILIES["qwen"]
    trainer = run(_args(tiny_models["qwen"], synth_bench, tmp_path / "o", "--max_steps", "1", "--learning_rate",
                        "1e-2", "--vision_lr", "1e-2", "--merger_lr", "1e-2", "--save_strategy", "no", *options))
    groups = set()
    for name, p in trainer.model.named_parameters():
        if p.requires_grad:
            kind = fam.param_group(name)
            groups.add(f"{kind}-dora" if "lora_magnitude" in name else f"{kind}-lora" if "lora_" in name else kind)
    assert groups == trained
    from safetensors.torch import load_file
    before = load_file(tiny_models["qwen"] / "model.safetensors")
    saved = (tmp_path / "o/model.safetensors") if "frozen-llm" in options else (tmp_path / "o/adapter_model.safetensors")
    assert saved.is_file()
    if "frozen-llm" in options:   # a whole checkpoint: the language model exactly as it was
        after = load_file(saved)
        assert all(torch.equal(before[k], after[k]) for k in before if fam.param_group(k) == "language")
        assert any(not torch.equal(before[k], after[k]) for k in before if fam.param_group(k) == "vision")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_accel_off_and_on_train_the_same_losses(tiny_models, synth_bench, tmp_path, family):
    """cogip.accel's training path (faster attention and matmuls, vision norms, checkpointing by part) against
    the plain transformers/PEFT path (`--accel off`): the same losses step by step, to float tolerance."""
    losses = {}
    for accel in ("off", "on"):
        probe = LossProbe()
        run(_args(tiny_models[family], synth_bench, tmp_path / accel, "--max_steps", "3", "--save_strategy", "no",
                  "--logging_steps", "1", "--accel", accel), callbacks=[probe])
        losses[accel] = probe.losses
    assert len(losses["on"]) == 3 and losses["on"][0] > 0
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-4)
    assert losses["on"][0] != losses["on"][2]   # it trained: the comparison is over changing weights
