"""Against the real Qwen2.5-VL, Llama-3.2-Vision and Gemma-3 tokenizers (cogip.models.real_tokenizers):
what the tiny tokenizers must match, one BOS in every training row and scoring prompt, and the number
reading of the loss and of expected-score mode on the published answers."""

from __future__ import annotations

import json
import os

import pytest
import torch

from cogip.data.layout import read_training_json
from cogip.dims import get_dimension
from cogip.evaluate.scorer import Answer, BatchPreparer, Scorer
from cogip.loss import NumberTokens, SoftLabelLoss
from cogip.models.families import FAMILIES
from cogip.train.data import SFTCollator

FAMILY_NAMES = list(FAMILIES)
BOS = {"qwen": None, "llama": "<|begin_of_text|>", "gemma": "<bos>"}
END_OF_TURN = {"qwen": "<|im_end|>", "llama": "<|eot_id|>", "gemma": "<end_of_turn>"}
NUMBER_CLASSES = {"qwen": [1], "llama": [1, 2, 3], "gemma": [1]}
PUBLISHED_ANSWERS = {"Aesthetics": "medium 5.577", "Emotional_Valence": "positive 2.000",
                     "Funniness": "very low 1.000", "Memorability": "high 0.712"}


@pytest.fixture(scope="session")
def real_dir():
    from cogip.errors import CogipError
    from cogip.models.real_tokenizers import default_dir, fetch
    try:
        return fetch(default_dir())   # a no-op where scripts/setup_env.sh already fetched them
    except CogipError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"real tokenizers unavailable: {e}")


@pytest.fixture(scope="session")
def real_models(real_dir, tmp_path_factory):
    """Tiny-weight models around the real tokenizers (`cogip models tiny --real-tokenizers`)."""
    from cogip.models.tiny import build_tiny
    root = tmp_path_factory.mktemp("real_models")
    return {f: build_tiny(f, root / f, real_tokenizers=real_dir) for f in FAMILY_NAMES}


@pytest.fixture(scope="session")
def processors(real_models, tiny_models):
    return {(kind, f): FAMILIES[f].load_processor(models[f])
            for kind, models in (("real", real_models), ("tiny", tiny_models)) for f in FAMILY_NAMES}


def test_real_vocabularies_are_the_families(processors):
    sizes = {"qwen": 151665, "llama": 128257, "gemma": 262145}
    ids = {"qwen": {"<|endoftext|>": 151643, "<|im_end|>": 151645, "<|image_pad|>": 151655},
           "llama": {"<|begin_of_text|>": 128000, "<|eot_id|>": 128009, "<|image|>": 128256},
           "gemma": {"<bos>": 2, "<end_of_turn>": 106, "<start_of_image>": 255999, "<image_soft_token>": 262144}}
    for f in FAMILY_NAMES:
        tok = processors["real", f].tokenizer
        assert len(tok) == sizes[f]
        assert {t: tok.convert_tokens_to_ids(t) for t in ids[f]} == ids[f]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_tiny_tokenizer_matches_the_real_one_where_the_code_depends_on_it(processors, family):
    real, tiny = processors["real", family].tokenizer, processors["tiny", family].tokenizer
    for tok in (real, tiny):
        # BOS: added by the tokenizer's post-processor for Llama and Gemma, none for Qwen
        assert tok.bos_token == BOS[family]
        first = tok("user").input_ids[0]
        assert (first == tok.bos_token_id) == (BOS[family] is not None)
        assert tok.eos_token_id is not None and tok.pad_token_id is not None
        eot = tok.convert_tokens_to_ids(END_OF_TURN[family])
        assert tok(END_OF_TURN[family], add_special_tokens=False).input_ids == [eot]
        assert tok.decode([eot], skip_special_tokens=True) == ""   # special: dropped from decoded answers
    # number splitting: every 1-3 digit string, grouped the same
    for k in (1, 2, 3):
        for v in range(10 ** k):
            text = str(v).zfill(k)
            pieces = [[t.decode([i]) for i in t(text, add_special_tokens=False).input_ids] for t in (real, tiny)]
            assert pieces[0] == pieces[1], text
    assert sorted(NumberTokens.from_tokenizer(real).classes) == NUMBER_CLASSES[family]
    assert sorted(NumberTokens.from_tokenizer(tiny).classes) == NUMBER_CLASSES[family]


def _number_pieces(tok, text: str) -> list[str]:
    return [p for p in (tok.decode([i]) for i in tok(text, add_special_tokens=False).input_ids)
            if any(c.isdigit() for c in p)]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_published_answers_split_into_the_same_number_tokens(processors, published, family):
    real, tiny = processors["real", family].tokenizer, processors["tiny", family].tokenizer
    answers = {it.answer for it in read_training_json(published / "cognition_training.json")}
    assert len(answers) > 1000   # 3200 items, 1176 distinct answers
    differ = [a for a in answers if _number_pieces(real, a) != _number_pieces(tiny, a)]
    assert differ == []
    if family == "llama":
        assert _number_pieces(real, "medium 5.577") == ["5", "577"]
        assert _number_pieces(real, "high 0.712") == ["0", "712"]


def _one_bos(tok, ids: list[int], mask: list[int], family: str) -> None:
    real_ids = [t for t, m in zip(ids, mask) if m]
    if BOS[family] is None:
        assert tok.bos_token_id is None or tok.bos_token_id not in real_ids
        assert real_ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    else:
        assert real_ids[0] == tok.bos_token_id and real_ids.count(tok.bos_token_id) == 1


@pytest.mark.parametrize("kind", ["real", "tiny"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_one_bos_in_every_training_row_and_scoring_prompt(processors, synth_bench, family, kind):
    fam, proc = FAMILIES[family], processors[kind, family]
    tok = proc.tokenizer
    images = synth_bench / "cognition/cognition_images"
    rows = [{"image": str(images / f"{d}/00000{i}.jpg"), "prompt": get_dimension(d).prompt + " " * i,
             "answer": a} for i, (d, a) in enumerate(PUBLISHED_ANSWERS.items())]
    batch = SFTCollator(fam, proc)(rows)
    for i, row in enumerate(rows):
        ids, mask = batch["input_ids"][i].tolist(), batch["attention_mask"][i].tolist()
        _one_bos(tok, ids, mask, family)
        supervised = [t for t, lab in zip(ids, batch["labels"][i].tolist()) if lab != -100]
        # the labels: the answer and the end-of-turn token, tokenized as on their own
        assert supervised == tok(row["answer"] + fam.end_of_turn, add_special_tokens=False).input_ids
        assert tok.decode(supervised) == row["answer"] + fam.end_of_turn
    from cogip.data.images import open_image
    prepared = BatchPreparer(proc, fam, torch.float32)([open_image(r["image"]) for r in rows],
                                                       [r["prompt"] for r in rows])
    for i in range(len(rows)):   # left-padded: the BOS is the first real token
        _one_bos(tok, prepared["input_ids"][i].tolist(), prepared["attention_mask"][i].tolist(), family)
    from cogip.accel.scoring import Lengths
    assert Lengths(BatchPreparer(proc, fam, torch.float32))(None, rows[0]["prompt"])[0] == len(
        tok(fam.chat_prompt(proc, rows[0]["prompt"]), add_special_tokens=False).input_ids)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_loss_reads_the_digits_of_real_answers(processors, family):
    tok = processors["real", family].tokenizer
    numbers = NumberTokens.from_tokenizer(tok)
    for answer in PUBLISHED_ANSWERS.values():
        ids = torch.tensor(tok(answer, add_special_tokens=False).input_ids)
        score = answer.split()[-1]
        groups = [str(v).zfill(int(k)) for v, k in zip(numbers.value[ids].tolist(), numbers.length[ids].tolist())
                  if k > 0]
        assert "".join(groups) == score.replace(".", "").lstrip("-")   # every digit, once, in its class
        loss = SoftLabelLoss(numbers, eta=0.15, lam=2.0)
        logits = torch.randn(len(ids), len(tok), generator=torch.Generator().manual_seed(0))
        total, regular, numeric = loss(logits, ids)
        plain = torch.nn.functional.cross_entropy(logits, ids, reduction="none")
        is_number = loss.length[ids] > 0   # single digits only, as published: Llama's '577' is a regular token
        assert is_number.sum().item() == sum(c.isdigit() for c in score) - (family == "llama") * 3
        assert regular.item() == pytest.approx(plain[~is_number].sum().item(), rel=1e-5)
        assert total.item() == pytest.approx((regular + 2.0 * numeric).item() / len(ids), rel=1e-6)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_expected_mode_reads_label_sign_and_digits_with_real_tokenizers(real_models, family):
    scorer = Scorer.load(str(real_models[family]))
    tok = scorer.tokenizer
    for dim_name, answer in [*PUBLISHED_ANSWERS.items(), ("Emotional_Valence", "negative -1.000")]:
        dim = get_dimension(dim_name)
        columns, spans, at = scorer._score_columns([dim])
        column = {int(t): c for c, t in enumerate(columns)}
        ids = tok(answer, add_special_tokens=False).input_ids
        logp = torch.full((len(ids), len(columns)), -30.0)   # the answer's every token certain
        for i, t in enumerate(ids):
            if t in column:
                logp[i, column[t]] = 0.0
        read = Answer("", None, None, False)
        scorer._expect(read, ids, logp, dim, spans, at)
        assert read.score == pytest.approx(float(answer.split()[-1]), abs=1e-6), answer
        label = " ".join(answer.split()[:-1])
        assert read.label_probs[label] == pytest.approx(1.0)


def test_inspect_shows_one_bos_and_the_supervised_answer(real_models, synth_bench, capsys):
    from cogip.cli import main
    data = synth_bench / "cognition_training.json"
    assert main(["inspect", str(real_models["llama"]), "--data", str(data), "--item", "1"]) == 0
    out = capsys.readouterr().out
    item = read_training_json(data)[1]
    assert out.count("'<|begin_of_text|><|start_header_id|>user") == 2   # the row and the prompt, one BOS each
    assert f"supervised: '{item.answer}<|eot_id|>'" in out
    ids = [json.loads(line.split("input ids:")[1].split("(")[0].replace("×", ",").replace("…", "0"))
           for line in out.splitlines() if "input ids:" in line]
    assert [i[:2] for i in ids] == [[128000, 128006]] * 2


def test_tiny_models_with_real_tokenizers_from_the_command_line(real_dir, tmp_path, capsys):
    from cogip.cli import main
    assert main(["models", "tiny", str(tmp_path), "--family", "gemma", "--real-tokenizers", str(real_dir)]) == 0
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["text_config"]["vocab_size"] == 262145 and cfg["image_token_index"] == 262144
    proc = FAMILIES["gemma"].load_processor(tmp_path)
    assert proc.tokenizer("1").input_ids == [2, proc.tokenizer.convert_tokens_to_ids("1")]


def test_training_row_logged_before_training_is_the_collators(real_models, synth_bench, tmp_path, capfd):
    from cogip.train import sft
    sft.main(["--model_id", str(real_models["gemma"]), "--data_path", str(synth_bench / "cognition_training.json"),
              "--image_folder", str(synth_bench / "cognition/cognition_images"), "--output_dir", str(tmp_path / "o"),
              "--max_steps", "1", "--per_device_train_batch_size", "2", "--use_cpu", "True", "--report_to", "none",
              "--save_strategy", "no", "--lora_r", "4", "--lora_alpha", "4"])
    err = capfd.readouterr().err
    first = read_training_json(synth_bench / "cognition_training.json")[0]
    assert "cogip sft: first training row" in err
    assert f"supervised: '{first.answer}<end_of_turn>'" in err
    assert "input:      '<bos><start_of_turn>user\\n" in err and "<image_soft_token>×" in err


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_launchers_on_models_with_real_tokenizers(real_models, synth_bench, tmp_path, family):
    """finetune_lora.sh then cog_test.sh (expected mode) on the adapter, as a user would."""
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, MODEL_ID=str(real_models[family]), DATA_PATH=str(synth_bench / "cognition_training.json"),
               IMAGE_FOLDER=str(synth_bench / "cognition/cognition_images"), OUTPUT_DIR=str(tmp_path / "sft"),
               NUM_GPUS="0", GLOBAL_BATCH="4", PER_DEVICE_BATCH="4", REPORT_TO="none", MIN_PIXELS="7056",
               MAX_PIXELS="7056")
    sft = subprocess.run(["bash", root / "sft" / family / "finetune_lora.sh", "--max_steps", "2", "--lora_r", "8"],
                         env=env, capture_output=True, text=True)
    assert sft.returncode == 0, sft.stderr[-3000:]
    first = read_training_json(synth_bench / "cognition_training.json")[0]
    assert f"supervised: '{first.answer}{END_OF_TURN[family]}'" in sft.stderr
    env.update(MODEL_ID=str(tmp_path / "sft"), TEST_DIR=str(synth_bench / "test_msg_file"),
               IMAGE_ROOT=str(synth_bench / "cognition/cognition_images"), OUT=str(tmp_path / "eval"), SAMPLE_N="3",
               MODE="expected", BATCH_SIZE="4")
    ev = subprocess.run(["bash", root / "evaluation" / family / "cog_test.sh"], env=env, capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert sorted(summary) == sorted(PUBLISHED_ANSWERS) and all(m["n"] == 3 for m in summary.values())
