"""`Scorer`: a family model + processor that answers describe-then-predict prompts for images.

Two modes, both from one batched, left-padded, greedy `generate` (one prefill per image):
- `generate`: the answer text, parsed (`cogip.parse`).
- `expected`: the score read from the model's token probabilities along the greedy answer instead of
  its sampled digits (`cogip.evaluate.expected`). Label probabilities follow the label-word trie along
  the greedy path: P(label) = Π P(token | prefix);
  where a label shares an off-path prefix with another (`very low`/`very high` when the model said
  `medium`), their joint mass is reported under `"very low|very high"`.

    scorer = Scorer.load("Qwen/Qwen2.5-VL-7B-Instruct")        # or a fine-tuned folder, or a LoRA adapter
    scorer.score(images, "Aesthetics")                          # [5.577, ...]
    scorer.answer(images, prompts, "Aesthetics", mode="generate")   # [Answer(text, label, score, ...), ...]

The speed work for long runs (batches in flight, compiled blocks, faster attention) is `cogip.accel`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..dims import Dimension, get_dimension
from ..errors import CogipError
from ..loss import NumberTokens
from ..models.families import Family, resolve_family
from ..parse import parse_answer
from .expected import read_number


LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass
class Answer:
    text: str
    label: str | None
    score: float | None
    ok: bool
    error: str | None = None
    spread: float | None = None                    # expected mode: std of the score
    label_probs: dict = field(default_factory=dict)


class BatchPreparer:
    """The CPU side of a batch (chat text, image processing, left padding): needs the processor and the
    model's dtype, not the model, so loader workers can start while the weights load (`ScorerLoading`)."""

    def __init__(self, processor, family: Family, dtype: torch.dtype):
        self.processor, self.family, self.dtype = processor, family, dtype

    def __call__(self, images: list, prompts: list[str]) -> dict:
        texts = [self.family.chat_prompt(self.processor, p) for p in prompts]
        self.processor.tokenizer.padding_side = "left"
        batch = dict(self.family.encode(self.processor, texts, images, return_tensors="pt", padding=True))
        # pixels in the model's dtype already here: the model's own first step is this cast (exact), and a
        # batch of 32 Qwen images is 616 MB in float32 to pass from a loader worker, pin and copy
        return {k: v.to(self.dtype) if torch.is_tensor(v) and v.is_floating_point() and self.dtype in LOW_PRECISION
                else v for k, v in batch.items()}


class ScorerLoading:
    """`Scorer.load` in two steps. The constructor reads only the processor and the configs, so `prepare`
    can run (in loader workers) while `load()` reads the weights: the benchmark loop's first batches are
    ready when the model is. `prepare` casts pixels to the dtype the model will load in (`dtype`, or with
    "auto" the checkpoint config's, as transformers does; float32, i.e. no cast, where it names none)."""

    def __init__(self, model_id: str, base_model: str | None = None, family: str | None = None, dtype="auto",
                 device: str | None = None, max_new_tokens: int = 24, min_pixels: int | None = None,
                 max_pixels: int | None = None, published_pixels: bool = False, trust_remote_code: bool = False):
        from ..models.adapters import adapter_base, processor_source
        self.model_id, self.base_model, self.device = model_id, base_model, device
        self.dtype_arg, self.max_new_tokens = dtype, max_new_tokens
        self.remote_code = {"trust_remote_code": True} if trust_remote_code else {}
        self.is_adapter = os.path.isfile(os.path.join(model_id, "adapter_config.json"))
        fam = resolve_family(model_id, family, any_model=True, trust_remote_code=trust_remote_code)
        if self.is_adapter:
            weights_src = base_model or adapter_base(model_id)
            resolve_family(weights_src, fam.name, any_model=True, trust_remote_code=trust_remote_code)   # the base too
            processor_src = processor_source(model_id, base_model)
        else:
            processor_src = weights_src = model_id
        self.family = fam
        self.processor = fam.load_processor(processor_src, **self.remote_code,
                                            **fam.pixel_bounds(min_pixels, max_pixels, published=published_pixels))
        from transformers import AutoConfig
        try:   # the model's config: its dtype, and its size for cogip.accel's choice of batch
            self.config = AutoConfig.from_pretrained(weights_src, **self.remote_code)
        except (OSError, ValueError):   # loading the weights reports a bad source, in one line
            self.config = None
        self.prepare = BatchPreparer(self.processor, fam, self._expected_dtype())

    def _expected_dtype(self) -> torch.dtype:
        if isinstance(self.dtype_arg, torch.dtype):
            return self.dtype_arg
        if self.dtype_arg != "auto":
            return getattr(torch, self.dtype_arg)
        dtype = getattr(self.config, "dtype", None)
        return getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.float32)

    def load(self) -> "Scorer":
        from ..models.adapters import load_adapted
        if self.is_adapter:
            model, _ = load_adapted(self.model_id, self.base_model, self.family, dtype=self.dtype_arg,
                                    device=self.device)
        else:
            model = self.family.load_model(self.model_id, dtype=self.dtype_arg, device=self.device, **self.remote_code)
        return Scorer(model, self.processor, self.family, self.max_new_tokens)


class Scorer:
    def __init__(self, model, processor, family: Family, max_new_tokens: int = 24):
        self.model, self.processor, self.family = model.eval(), processor, family
        self.tokenizer = processor.tokenizer
        self.max_new_tokens = max_new_tokens
        self.prepare = BatchPreparer(processor, family, model.dtype)   # the CPU side of a batch
        self.numbers = NumberTokens.from_tokenizer(self.tokenizer, model.config.get_text_config().vocab_size)
        self._label_tries: dict[str, list[tuple[str, list[int]]]] = {}
        self._columns: dict[tuple[str, ...], tuple] = {}

    @classmethod
    def load(cls, model_id: str, base_model: str | None = None, family: str | None = None, dtype="auto",
             device: str | None = None, max_new_tokens: int = 24, min_pixels: int | None = None,
             max_pixels: int | None = None, trust_remote_code: bool = False) -> "Scorer":
        """A full checkpoint (hub id or folder), or a LoRA adapter folder (+ its base model). `family`: None
        or "auto" reads it from the model's files; a model of none of the families is scored through its own
        processor and chat template (`cogip.models.families.GENERIC`)."""
        return ScorerLoading(model_id, base_model, family, dtype, device, max_new_tokens, min_pixels, max_pixels,
                             trust_remote_code=trust_remote_code).load()

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def _generate(self, batch: dict, with_scores: bool):
        batch = {k: v.to(self.model.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                  return_dict_in_generate=True, output_logits=with_scores,
                                  pad_token_id=self.tokenizer.pad_token_id)
        new = out.sequences[:, batch["input_ids"].shape[1]:]
        logits = torch.stack(out.logits, 1).float() if with_scores else None   # [B, steps, V]
        return new, logits

    def _end_ids(self) -> set[int]:
        """Where an answer ends: the family's end-of-turn token, the tokenizer's EOS and pad, and the model's
        generation-config end tokens (generate stops at those)."""
        ends = self.model.generation_config.eos_token_id
        ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id,
               *(ends if isinstance(ends, (list, tuple)) else [ends])}
        if self.family.end_of_turn:
            ids.add(self.tokenizer.convert_tokens_to_ids(self.family.end_of_turn))
        return {i for i in ids if i is not None}

    def answer(self, images: list, prompts: list[str], dimension: str | Dimension, mode: str = "generate") -> list[Answer]:
        """One Answer per (image, prompt)."""
        return self.answer_prepared(self.prepare(images, prompts), dimension, mode)

    def answer_prepared(self, batch: dict, dimension: str | Dimension | Sequence, mode: str = "generate") -> list[Answer]:
        """Answers for a batch from `prepare`. `dimension`: one for the whole batch, or one per item (a batch
        may mix dimensions: each answer is parsed, and in expected mode read, on its own item's)."""
        if mode not in ("generate", "expected"):
            raise CogipError(f"scoring mode must be generate or expected, not {mode!r}")
        size = len(batch["input_ids"])
        per_item = dimension if isinstance(dimension, (list, tuple)) else [dimension] * size
        if len(per_item) != size:
            raise CogipError(f"{len(per_item)} dimensions given for a batch of {size} items")
        dims = [d if isinstance(d, Dimension) else get_dimension(d) for d in per_item]
        new, logits = self._generate(batch, with_scores=mode == "expected")
        if mode == "expected":   # the few columns the scores read, normalised over the vocabulary: one transfer
            cols, spans, at = self._score_columns(dims)
            logp = (logits[..., cols.to(logits.device)] - logits.logsumexp(-1, keepdim=True)).cpu()
        stop = self._end_ids()
        answers = []
        for b, (ids, dim) in enumerate(zip(new.tolist(), dims)):
            n = next((i for i, t in enumerate(ids) if t in stop), len(ids))
            text = self.tokenizer.decode(ids[:n], skip_special_tokens=True).strip()
            parsed = parse_answer(text, dim)
            ans = Answer(text, parsed.label, parsed.score, parsed.ok, parsed.error)
            if mode == "expected" and parsed.ok:
                self._expect(ans, ids[:n], logp[b, :n], dim, spans, at)
            answers.append(ans)
        return answers

    def score(self, images: list, dimension: str | Dimension, mode: str = "expected",
              prompt: str | None = None, batch_size: int = 8) -> list[float | None]:
        """Scores for images on a dimension (None where the answer did not parse)."""
        dim = dimension if isinstance(dimension, Dimension) else get_dimension(dimension)
        out = []
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            out += [a.score for a in self.answer(chunk, [prompt or dim.prompt] * len(chunk), dim, mode)]
        return out

    # ------------------------------------------------------------------ expected mode
    def _label_trie(self, dim: Dimension) -> list[tuple[str, list[int]]]:
        if dim.name not in self._label_tries:
            self._label_tries[dim.name] = [(lab, self.tokenizer(lab, add_special_tokens=False)["input_ids"])
                                           for lab in dim.labels]
        return self._label_tries[dim.name]

    def _score_columns(self, dims: list[Dimension]) -> tuple[torch.Tensor, dict[int, slice], dict[int, int]]:
        """Vocabulary ids whose log-probabilities expected mode reads: the number tokens (class k at
        spans[k], in value order) and the label tokens of the batch's dimensions (token id -> column at[id])."""
        unique = {d.name: d for d in dims}
        key = tuple(sorted(unique))
        if key not in self._columns:
            ids, spans = [], {}
            for k, cls in sorted(self.numbers.classes.items()):
                spans[k] = slice(len(ids), len(ids) + len(cls))
                ids += cls.tolist()
            labels = sorted({t for d in unique.values() for _, lids in self._label_trie(d) for t in lids})
            at = {t: len(ids) + j for j, t in enumerate(labels)}
            self._columns[key] = (torch.tensor(ids + labels), spans, at)
        return self._columns[key]

    def _expect(self, ans: Answer, ids: list[int], logp: torch.Tensor, dim: Dimension, spans: dict[int, slice],
                at: dict[int, int]) -> None:
        """logp [n, columns] on the CPU: log-probabilities of the `_score_columns` at each answer step."""
        # an id past the tokenizer's vocabulary (models pad theirs: Qwen2.5-VL-7B has 152064 rows for 151665
        # tokens) has no token (None): read as empty text (no sign, no decimal point)
        tokens = [t or "" for t in self.tokenizer.convert_ids_to_tokens(ids)]
        # label probabilities: labels start at the answer's first token
        probs: dict[str, float] = {}
        for label, lids in self._label_trie(dim):
            total, j = 0.0, 0
            while j < len(lids) and j < len(ids) and (j == 0 or ids[j - 1] == lids[j - 1]):
                total += logp[j, at[lids[j]]].item()
                j += 1
            if j == len(lids):
                probs[label] = math.exp(total)
            else:   # diverged from the greedy path after a shared prefix: the split is unknown
                key = "|".join(l for l, t in self._label_trie(dim) if t[:j] == lids[:j])
                probs[key] = math.exp(total)
        ans.label_probs = {k: round(v, 6) for k, v in probs.items()}
        # the number: the first number token's, after the label
        length = self.numbers.length

        def distribution(i: int, k: int):
            return torch.arange(10 ** k, dtype=torch.float32), torch.softmax(logp[i, spans[k]], -1)

        number = read_number(tokens, [int(length[t]) for t in ids], distribution, dim)
        if number is not None:
            ans.score, ans.spread = number
