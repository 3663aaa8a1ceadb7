"""Offline byte-level BPE tokenizers that split numbers the way each real family does.

The vocabulary is small and learned from the project's own prompt text; what mirrors the
real family is what the soft-label loss and the scorer depend on (tested against the real
tokenizers, `cogip.models.real_tokenizers`):
- Qwen2 / Qwen2.5: every digit is its own token (`\\p{N}` in the pre-tokenizer); no BOS.
- Llama 3: digits are grouped left to right in runs of up to three (`\\p{N}{1,3}`), and every
  1-, 2- and 3-digit string is one token, so `5.577` is `5`, `.`, `577` (a run in the vocabulary is
  taken whole before any merge, as Llama 3's tiktoken-style BPE does); BOS added by the post-processor.
- Gemma 3: every digit is its own token (SentencePiece with split digits); BOS added likewise.
plus each family's special tokens. What they do not match: the vocabulary itself (ids, sizes,
how words split), Gemma's SentencePiece `▁` spaces (byte-level `Ġ` here) and the normalisers.
"""

from __future__ import annotations

import json
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# The GPT-4-style split used by Qwen2 and Llama 3; they differ only in how digits are grouped.
_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}DIGITS"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_tokenizer(digit_group: int) -> pre_tokenizers.PreTokenizer:
    pattern = _SPLIT.replace("DIGITS", "" if digit_group == 1 else f"{{1,{digit_group}}}")
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train_bpe(corpus: Iterable[str], special_tokens: list[str], digit_group: int = 1,
              vocab_size: int = 1200, bos: str | None = None) -> Tokenizer:
    """`bos`: the token the post-processor puts before every encoded text (as the real Llama 3 and
    Gemma 3 tokenizers do), or None (Qwen)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer(1)  # learn merges with digits isolated: number tokens are added below
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus), trainer)
    if digit_group > 1:
        tok = _add_digit_groups(tok, digit_group)
        tok.model.ignore_merges = True   # "712" is one token, not "7" + a merged "12"
    tok.pre_tokenizer = _pre_tokenizer(digit_group)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def _add_digit_groups(tok: Tokenizer, group: int) -> Tokenizer:
    """Add every 2..`group`-digit string as a token, with the merges that build it left to right."""
    spec = json.loads(tok.to_str())
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    as_pairs = not merges or isinstance(merges[0], list)
    strings = [str(d) for d in range(10)]
    for length in range(2, group + 1):
        longer = []
        for head in strings:
            if len(head) != length - 1:
                continue
            for d in range(10):
                new = head + str(d)
                if new not in vocab:
                    vocab[new] = len(vocab) + len(spec.get("added_tokens", []))
                    merges.append([head, str(d)] if as_pairs else f"{head} {d}")
                longer.append(new)
        strings += longer
    # ids must stay dense: renumber vocab after the special (added) tokens, which keep theirs
    special = {t["content"] for t in spec.get("added_tokens", [])}
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    spec["model"]["vocab"] = {k: i for i, (k, _) in enumerate(ordered)}
    for t in spec.get("added_tokens", []):
        t["id"] = spec["model"]["vocab"][t["content"]] if t["content"] in spec["model"]["vocab"] else t["id"]
    assert special <= set(spec["model"]["vocab"]), "special tokens must be in the vocabulary"
    return Tokenizer.from_str(json.dumps(spec))
