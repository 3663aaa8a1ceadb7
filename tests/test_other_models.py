"""Any Hugging Face vision-language model through the generic adapter (`--family auto`): tiny random-weight
Idefics3 (SmolVLM) and LLaVA-OneVision checkpoints built offline, both scoring modes, through
`evaluation/cog_test.sh`; and one clear line for a model that cannot be scored."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cogip.data.images import open_image
from cogip.data.layout import read_test_messages
from cogip.evaluate.loop import read_records
from cogip.evaluate.scorer import Scorer
from cogip.models.families import GENERIC
from cogip.models.tiny import OTHER_ARCHITECTURES, build_tiny
from test_failures import ROOT, eval_env, launch, nothing_in, one_error_line

DIMS = ("Aesthetics", "Funniness", "Emotional_Valence", "Memorability")


@pytest.fixture(scope="module")
def others(tmp_path_factory):
    root = tmp_path_factory.mktemp("other_architectures")
    return {arch: build_tiny(arch, root / arch) for arch in OTHER_ARCHITECTURES}


def records(out):
    return {dim: read_records(out / dim) for dim in DIMS}


@pytest.mark.parametrize("arch", list(OTHER_ARCHITECTURES))
def test_generic_adapter_answers_as_the_models_own_chat_template_does(others, synth_bench, arch):
    """Batched and left-padded through the adapter, the same answers as transformers' own path for one image:
    the processor's chat template with the image as a content part, then generate."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    scorer = Scorer.load(str(others[arch]), max_new_tokens=12)
    assert scorer.family is GENERIC and type(scorer.model).__name__.lower().startswith(arch.replace("_", ""))
    items = read_test_messages(synth_bench / "test_msg_file/Aesthetics/Aesthetics_messages.json",
                               synth_bench / "test_msg_file/Aesthetics/Aesthetics_scores.json", "Aesthetics")[:4]
    images = [open_image(synth_bench / "cognition/cognition_images" / it.image) for it in items]
    answers = scorer.answer(images, [it.prompt for it in items], "Aesthetics")

    processor = AutoProcessor.from_pretrained(others[arch])
    model = AutoModelForImageTextToText.from_pretrained(others[arch]).eval()
    for image, it, answer in zip(images, items, answers):
        inputs = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": it.prompt}]}],
            add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        assert answer.text == processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


@pytest.mark.parametrize("arch", list(OTHER_ARCHITECTURES))
def test_cog_test_scores_other_architectures_in_both_modes(others, synth_bench, tmp_path, arch):
    runs = {}
    for mode in ("generate", "expected"):
        run = launch("evaluation/cog_test.sh", "--max-new-tokens", 12,
                     **eval_env(synth_bench, others[arch], tmp_path / mode, SAMPLE_N=6, MODE=mode, BATCH_SIZE=4,
                              MIN_PIXELS="", MAX_PIXELS=""))   # bounds of Qwen processors only
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads((tmp_path / mode / "summary.json").read_text())
        assert set(summary) == set(DIMS)
        runs[mode] = records(tmp_path / mode)
        assert all(len(r) == 6 for r in runs[mode].values())
    for dim in DIMS:   # one greedy answer, read two ways
        for i, g in runs["generate"][dim].items():
            e = runs["expected"][dim][i]
            assert (e["answer"], e["ok"], e["label"]) == (g["answer"], g["ok"], g["label"])
            if e["ok"] and any(ch.isdigit() for ch in e["answer"]):
                assert e["spread"] is not None and e["score"] is not None


def test_generic_adapter_on_a_family_model_gives_the_familys_answers(trained, synth_bench, tmp_path):
    """`--family generic` drives a Qwen2.5-VL through its own processor and chat template only: the same answers
    and expected scores as the Qwen adapter."""
    runs = {}
    for family in ("qwen", "generic"):
        out = tmp_path / family
        run = launch("evaluation/cog_test.sh", "--family", family,
                     **eval_env(synth_bench, trained["qwen"], out, SAMPLE_N=8, MODE="expected"))
        assert run.returncode == 0, run.stderr[-3000:]
        runs[family] = records(out)
    assert sum(r["ok"] for rs in runs["qwen"].values() for r in rs.values()) >= 24   # a model that answers
    for dim in DIMS:
        for i, q in runs["qwen"][dim].items():
            g = runs["generic"][dim][i]
            assert g["answer"] == q["answer"] and g["label_probs"] == q["label_probs"]
            assert g["score"] == pytest.approx(q["score"], abs=1e-6) if q["ok"] else not g["ok"]


def test_a_model_that_takes_no_images_is_one_line(tmp_path, synth_bench):
    from transformers import LlamaConfig
    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=100).save_pretrained(tmp_path / "text_only")   # a config is all it takes
    one_error_line(launch("evaluation/cog_test.sh", **eval_env(synth_bench, tmp_path / "text_only", tmp_path / "out")),
                   "model_type 'llama' takes no images", "config.json")
    assert nothing_in(tmp_path / "out")


def test_a_model_with_its_own_code_needs_trust_remote_code(tmp_path, synth_bench):
    model = tmp_path / "own_code"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "my_vlm", "auto_map": {
        "AutoConfig": "modeling_my_vlm.MyConfig", "AutoModelForCausalLM": "modeling_my_vlm.MyModel"}}))
    env = eval_env(synth_bench, model, tmp_path / "out")
    one_error_line(launch("evaluation/cog_test.sh", **env), "model_type 'my_vlm' runs code shipped with the checkpoint",
                   "--trust-remote-code")
    one_error_line(launch("evaluation/cog_test.sh", "--trust-remote-code", **env),
                   "defines no AutoModelForImageTextToText")
    assert nothing_in(tmp_path / "out")


def test_other_architectures_are_scored_not_trained(others, synth_bench, tmp_path):
    run = subprocess.run([sys.executable, "-m", "cogip", "train", "--model_id", str(others["idefics3"]), "--data_path",
                          str(synth_bench / "cognition_training.json"), "--image_folder",
                          str(synth_bench / "cognition/cognition_images"), "--output_dir", str(tmp_path / "sft")],
                         capture_output=True, text=True, cwd=ROOT)
    one_error_line(run, "'idefics3'", "fine-tunes only qwen, llama, gemma")
    assert nothing_in(tmp_path / "sft")


def test_a_model_without_an_image_processor_or_chat_template_is_one_line(others, synth_bench, tmp_path):
    """The generic adapter asks through the model's own processor and chat template: a checkpoint without
    one stops in one line naming the file, before the weights load."""
    import shutil
    no_template = tmp_path / "no_template"
    shutil.copytree(others["llava_onevision"], no_template)
    (no_template / "chat_template.jinja").unlink()
    (no_template / "model.safetensors").write_bytes(b"not weights")
    one_error_line(launch("evaluation/cog_test.sh", **eval_env(synth_bench, no_template, tmp_path / "out",
                                                              MIN_PIXELS="", MAX_PIXELS="")), "no chat template")
    no_images = tmp_path / "no_images"
    shutil.copytree(no_template, no_images)
    (no_images / "processor_config.json").unlink()
    one_error_line(launch("evaluation/cog_test.sh", **eval_env(synth_bench, no_images, tmp_path / "out",
                                                              MIN_PIXELS="", MAX_PIXELS="")), "image processor")
    assert nothing_in(tmp_path / "out")
