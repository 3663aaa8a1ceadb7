"""`Scorer`: a family model + processor that answers describe-then-predict prompts for images.

Two modes, both from one batched, left-padded, greedy `generate` (one prefill per image):
- `generate`: the answer text, parsed (`cogip.parse`).
- `expected`: the score read from the model's token probabilities instead of its sampled digits.
  Along the greedy answer, each number token's distribution (restricted to number tokens of its
  digit count: single digits for Qwen/Gemma, 1–3-digit tokens for Llama 3) gives an expected value;
  the score is Σ E[token] · 10^position, its spread sqrt(Σ Var[token] · 10^(2·position)) (positions
  treated as independent). The sign and the decimal point follow the greedy answer. Label
  probabilities follow the label-word trie along the greedy path: P(label) = Π P(token | prefix);
  where a label shares an off-path prefix with another (`very low`/`very high` when the model said
  `medium`), their joint mass is reported under `"very low|very high"`.

`answer_stream` keeps several batches in flight (threads, one CUDA stream each), so that one batch's
host-side work overlaps another's kernels.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..dims import Dimension, get_dimension
from ..errors import CogipError
from ..loss import NumberTokens
from ..models.attention import use_fast_vision_attention, use_packed_prefill
from ..models.vision_matmuls import use_fast_vision_matmuls
from ..models.blocks import compile_blocks
from ..models.families import Family, resolve_family
from ..parse import parse_answer


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
        self._prompt_tokens: dict[str, int] = {}

    def length(self, image_size: tuple[int, int] | None, prompt: str) -> int:
        """The tokens an item's sequence will have (its chat text, plus its image's visual tokens where
        they vary with its size, `image_size` = (width, height)): what a batch pads its items up to."""
        if prompt not in self._prompt_tokens:
            text = self.family.chat_prompt(self.processor, prompt)
            self._prompt_tokens[prompt] = len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        visual = self.family.visual_tokens_added(self.processor, *image_size) if image_size else 0
        return self._prompt_tokens[prompt] + visual

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
                 max_pixels: int | None = None, compile: str = "none", compile_dynamic: bool | None = True):
        from ..models.adapters import adapter_base, processor_source
        self.model_id, self.base_model, self.device = model_id, base_model, device
        self.dtype_arg, self.max_new_tokens = dtype, max_new_tokens
        self.compile, self.compile_dynamic = compile, compile_dynamic
        self.is_adapter = os.path.isfile(os.path.join(model_id, "adapter_config.json"))
        fam = resolve_family(model_id, family)
        if self.is_adapter:
            weights_src = base_model or adapter_base(model_id)
            resolve_family(weights_src, fam.name)   # the base too, before anything loads
            processor_src = processor_source(model_id, base_model)
        else:
            processor_src = weights_src = model_id
        self.family = fam
        self.processor = fam.load_processor(processor_src, **fam.pixel_bounds(min_pixels, max_pixels))
        self.prepare = BatchPreparer(self.processor, fam, self._expected_dtype(weights_src))

    def _expected_dtype(self, weights_src: str) -> torch.dtype:
        if isinstance(self.dtype_arg, torch.dtype):
            return self.dtype_arg
        if self.dtype_arg != "auto":
            return getattr(torch, self.dtype_arg)
        from transformers import AutoConfig
        try:
            dtype = getattr(AutoConfig.from_pretrained(weights_src), "dtype", None)
        except (OSError, ValueError):   # loading the weights reports a bad source, in one line
            return torch.float32
        return getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.float32)

    def load(self) -> "Scorer":
        from ..models.adapters import load_adapted
        if self.is_adapter:
            model, _ = load_adapted(self.model_id, self.base_model, self.family, dtype=self.dtype_arg,
                                    device=self.device)
        else:
            model = self.family.load_model(self.model_id, dtype=self.dtype_arg, device=self.device)
        return Scorer(model, self.processor, self.family, self.max_new_tokens, self.compile,
                      compile_dynamic=self.compile_dynamic)


def _frames_traced() -> int:
    """Frames torch.compile has traced in this process so far (each compilation or recompilation)."""
    from torch._dynamo.utils import counters
    return counters["frames"]["total"]


def compile_report() -> dict:
    """What torch.compile has cost this process so far, for timing.json: frames traced, seconds compiling
    (tracing, inductor or its cache, guards), and those seconds by phase, nested phases included, so they
    do not add up: the start of a compiled loop is mostly this, cold or warm (docs/benchmarks.md)."""
    from torch._dynamo.utils import compilation_time_metrics
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:   # torch's private module moved: report no folder rather than fail a finished run
        cache_dir = lambda: None
    try:   # inductor's pool of compile worker processes: whether this process started one, and its size
        from torch._inductor import async_compile, config
        workers = {"compile_threads": config.compile_threads, "worker_pool_started": bool(async_compile._pool_set)}
    except (ImportError, AttributeError):
        workers = {}
    phases = {name: round(sum(times), 3) for name, times in compilation_time_metrics.items() if sum(times) >= 0.01}
    return {"frames": _frames_traced(), "seconds": phases.get("_compile.compile_inner", 0.0),
            "cache_dir": cache_dir(), **workers, "phases": dict(sorted(phases.items(), key=lambda kv: -kv[1]))}


def _eager_on_recompile():
    """Set at once, process-wide, until the returned object's __exit__: compiled code runs where its
    guards hold, and what would recompile runs uncompiled (no tracing, so no patches under batches in flight)."""
    return torch.compiler.set_stance("eager_on_recompile")


class Scorer:
    def __init__(self, model, processor, family: Family, max_new_tokens: int = 24, compile: str = "none",
                 cudnn_attention: bool = False, compile_dynamic: bool | None = True):
        self.model, self.processor, self.family = model.eval(), processor, family
        # cuDNN's fused attention builds (and compiles) a plan for every new shape in every thread, with
        # memory outside PyTorch's allocator; decoding meets a new shape at every step. On an H100 that
        # made the first batches seconds slower and, with batches in flight, failed intermittently
        # (`mha_graph.execute(...).is_good()`, pytorch#190321). Flash and memory-efficient SDPA have no plans.
        self.cudnn_attention = cudnn_attention
        self.tokenizer = processor.tokenizer
        use_fast_vision_attention(model)   # exact, faster vision attention (cogip.models.attention)
        use_packed_prefill(model)   # exact; a padded batch's prefill in flash's kernel on a GPU (likewise)
        use_fast_vision_matmuls(model)   # exact; Qwen's vision matmuls in shapes cuBLAS runs fast
        # fuses elementwise work (docs/benchmarks.md). compile_dynamic: compile_blocks' `dynamic` for the vision blocks;
        # True (one compile, dynamic shapes from the first batch): real images differ in size, so the graphs end up
        # dynamic anyway, and compiling static ones first costs a second compile (nineteenth round)
        self.compiled = compile_blocks(model, family, compile, dynamic=compile_dynamic) > 0
        self._compiled_shapes: set[tuple] = set()   # batch shapes the compiled parts have already run
        self._compiling = self.compiled   # until a batch of a new shape compiles nothing (answer_stream)
        self.max_new_tokens = max_new_tokens
        self.prepare = BatchPreparer(processor, family, model.dtype)   # the CPU side of a batch
        self.numbers = NumberTokens.from_tokenizer(self.tokenizer, model.config.get_text_config().vocab_size)
        self._label_tries: dict[str, list[tuple[str, list[int]]]] = {}
        self._columns: dict[tuple[str, ...], tuple] = {}

    @classmethod
    def load(cls, model_id: str, base_model: str | None = None, family: str | None = None, dtype="auto",
             device: str | None = None, max_new_tokens: int = 24, min_pixels: int | None = None,
             max_pixels: int | None = None, compile: str = "none", compile_dynamic: bool | None = True) -> "Scorer":
        """A full checkpoint (hub id or folder), or a LoRA adapter folder (+ its base model)."""
        return ScorerLoading(model_id, base_model, family, dtype, device, max_new_tokens, min_pixels, max_pixels,
                             compile, compile_dynamic).load()

    # ------------------------------------------------------------------ generation
    def _attention_backends(self):
        """SDPA without cuDNN's backend while answering (see __init__). The choice is process-wide in torch,
        so `answer_stream` holds it for the whole stream and the batches in flight all see the same."""
        if self.cudnn_attention or self.model.device.type != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    @torch.no_grad()
    def _generate(self, batch: dict, with_scores: bool):
        batch = {k: v.to(self.model.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with self._attention_backends():
            out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      return_dict_in_generate=True, output_logits=with_scores,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out.sequences[:, batch["input_ids"].shape[1]:]
        logits = torch.stack(out.logits, 1).float() if with_scores else None   # [B, steps, V]
        return new, logits

    def _end_ids(self) -> set[int]:
        ids = {self.tokenizer.convert_tokens_to_ids(self.family.end_of_turn), self.tokenizer.eos_token_id,
               self.tokenizer.pad_token_id}
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

    def answer_stream(self, jobs: Iterable[tuple], depth: int = 1) -> Iterator[tuple]:
        """(key, prepared batch, dimension(s), mode) jobs -> (key, answers), in job order.

        depth > 1 keeps up to `depth` batches in flight, each in its own thread (and CUDA stream): HF
        `generate` leaves the GPU idle whenever the host syncs (a stop check per decoding step, the
        position ids, the answer parsing) and then launches what follows; another batch's kernels fill
        those gaps. Exact: every batch runs the same computation as alone. The threads stay for later
        calls (`_answer_threads`).

        With compiled parts, a batch of a shape they have not run yet runs alone while they may still
        compile: compiling traces the model with process-wide patches (`torch.fx` replaces
        `nn.Module.__call__` while tracing), which another thread's model calls would run into. Once a
        batch of a new shape has compiled nothing (the graphs have gone dynamic), every batch runs in
        flight, under the stance `eager_on_recompile`: a part whose guards a later batch fails runs
        uncompiled for it instead of tracing. Real images differ in size, so nearly every batch has a
        shape of its own; without this, they all ran alone."""
        with self._attention_backends():
            yield from self._answer_stream(jobs, depth)

    def _answer_stream(self, jobs: Iterable[tuple], depth: int) -> Iterator[tuple]:
        if depth <= 1:
            for key, batch, dim, mode in jobs:
                yield key, self.answer_prepared(batch, dim, mode)
            return
        _per_thread_state(self.model)
        cuda = self.model.device.type == "cuda"
        if cuda:   # the other streams read weights written on the default one
            torch.cuda.synchronize(self.model.device)
        pool, local = self._answer_threads(depth)

        def run(batch, dim, mode):
            if cuda and not hasattr(local, "stream"):
                local.stream = torch.cuda.Stream(self.model.device)
            with torch.cuda.stream(local.stream) if cuda else contextlib.nullcontext():
                return self.answer_prepared(batch, dim, mode)

        pending: deque = deque()
        stance = None
        try:
            for key, batch, dim, mode in jobs:
                shape = self._compiling and tuple((k, tuple(v.shape)) for k, v in batch.items() if torch.is_tensor(v))
                if shape and shape not in self._compiled_shapes:
                    while pending:   # may compile: alone
                        done_key, done = pending.popleft()
                        yield done_key, done.result()
                    traced = _frames_traced()
                    answers = pool.submit(run, batch, dim, mode).result()
                    self._compiled_shapes.add(shape)
                    self._compiling = _frames_traced() > traced
                    yield key, answers
                    continue
                if self.compiled and not self._compiling and stance is None:   # while compiling, batches of
                    stance = _eager_on_recompile()   # shapes already run go in flight as they are, and new ones still compile
                pending.append((key, pool.submit(run, batch, dim, mode)))
                while len(pending) > depth:   # one more than the threads, queued: none waits for this loop
                    key, done = pending.popleft()
                    yield key, done.result()
            while pending:
                key, done = pending.popleft()
                yield key, done.result()
        finally:
            for _, left in pending:   # interrupted: let what runs finish, so the next call starts clean
                left.cancel() or left.exception()
            if stance is not None:
                stance.__exit__(None, None, None)

    def _answer_threads(self, depth: int):
        """The threads (and their CUDA streams) that answer batches, kept across calls: the allocator
        caches memory per stream (and torch cuDNN attention plans per thread, with cudnn_attention),
        so new ones would allocate and build again for every run."""
        if getattr(self, "_pool_depth", None) != depth:
            if getattr(self, "_pool", None) is not None:
                self._pool.shutdown(wait=True)
            self._pool = ThreadPoolExecutor(depth, thread_name_prefix="cogip-answer")
            self._pool_local, self._pool_depth = threading.local(), depth
        return self._pool, self._pool_local

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
        # the number: first number token after the label
        length = self.numbers.length
        start = next((i for i, t in enumerate(ids) if length[t] > 0), None)
        if start is None:
            return
        j, int_part, frac_part = start, [], []
        while j < len(ids) and length[ids[j]] > 0:
            int_part.append(j)
            j += 1
        if j < len(ids) and tokens[j] == ".":
            j += 1
            while j < len(ids) and length[ids[j]] > 0:
                frac_part.append(j)
                j += 1
        mean = var = 0.0
        exponent = sum(int(length[ids[i]]) for i in int_part)
        for i in int_part + frac_part:
            k = int(length[ids[i]])
            exponent -= k
            p = torch.softmax(logp[i, spans[k]], -1)
            values = torch.arange(10 ** k, dtype=p.dtype)
            m = (p * values).sum().item()
            v = (p * values ** 2).sum().item() - m * m
            mean += m * 10.0 ** exponent
            var += max(v, 0.0) * 10.0 ** (2 * exponent)
        sign = -1.0 if start > 0 and tokens[start - 1].lstrip("Ġ▁ ").endswith("-") else 1.0
        ans.score = min(max(sign * mean, dim.low), dim.high)
        ans.spread = math.sqrt(var)


class _PerThread:
    """A module attribute that each thread sees on its own."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return getattr(obj.__dict__.setdefault("_cogip_threads", threading.local()), self.name, None)

    def __set__(self, obj, value):
        setattr(obj.__dict__.setdefault("_cogip_threads", threading.local()), self.name, value)


# Qwen2.5-VL writes its position offsets on the module at prefill; transformers 5.24's `generate` then
# carries positions in its own kwargs, but other versions read them back while decoding
PER_CALL_STATE = ("rope_deltas",)


def _per_thread_state(model) -> None:
    """Give every module that keeps per-call state on itself a per-thread copy of it, so that
    concurrent `generate` calls (`Scorer.answer_stream`) do not read each other's."""
    for module in model.modules():
        names = [n for n in PER_CALL_STATE if n in vars(module)]
        if names and not isinstance(vars(type(module)).get(names[0]), _PerThread):
            cls = type(module)
            module.__class__ = type(cls.__name__, (cls,), {n: _PerThread(n) for n in names})
            for n in names:
                setattr(module, n, vars(module).pop(n))
