"""Readers and writers for a *bench folder* in the published CogIP-Bench layout.

    DIR/cognition/cognition_images/<Dim>/<file>          images (paths below are relative to this root)
    DIR/cognition/cognition_scores/<Dim>_scores.txt      `<file>\t<score>` per line
    DIR/cognition_training.json                          LLaVA-style SFT items, `<image>` in the prompt
    DIR/training_grpo.json                               the same items, target as `<answer>…</answer>`
    DIR/test_msg_file/<Dim>/<Dim>_messages.json          chat messages, one list per item
    DIR/test_msg_file/<Dim>/<Dim>_scores.json            the matching `"<label> <score>"` strings

Every reader raises CogipError naming the file and the item for anything malformed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..dims import DIMENSION_NAMES, Dimension, get_dimension
from ..errors import CogipError
from ..parse import parse_answer


@dataclass
class BenchItem:
    """One image with its prompt and its human reference, in any split."""
    id: str                  # training id ("00042") or test index as a string
    dimension: str
    image: str               # relative to the image root, e.g. "Aesthetics/000042.jpg"
    prompt: str              # without any `<image>` placeholder
    answer: str              # "<label> <score>", no tags
    score: float
    label: str


class BenchPaths:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def images(self) -> Path:
        return self.root / "cognition" / "cognition_images"

    def scores(self, dim: str) -> Path:
        return self.root / "cognition" / "cognition_scores" / f"{dim}_scores.txt"

    @property
    def training(self) -> Path:
        return self.root / "cognition_training.json"

    @property
    def grpo(self) -> Path:
        return self.root / "training_grpo.json"

    @property
    def test_dir(self) -> Path:
        return self.root / "test_msg_file"

    def messages(self, dim: str) -> Path:
        return self.test_dir / dim / f"{dim}_messages.json"

    def test_scores(self, dim: str) -> Path:
        return self.test_dir / dim / f"{dim}_scores.json"


# ---------------------------------------------------------------- low-level I/O

def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CogipError("file not found", file=str(path))
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CogipError(f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}", file=str(path)) from None
    except UnicodeDecodeError as e:
        raise CogipError(f"not UTF-8 text ({e.reason})", file=str(path)) from None


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a whole file or nothing: a killed run never leaves a half-written result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def append_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Append records as JSON lines, flushed to disk. A kill mid-write leaves a partial last line:
    start a new line first so it never swallows a record (readers skip the broken line)."""
    path = Path(path)
    cut = False
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        if cut:
            f.write("\n")
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


_IMAGE_TAG = re.compile(r"^\s*<image>")


def strip_image_tag(prompt: str) -> str:
    """Prompt text without the leading `<image>` placeholder and surrounding blank space."""
    return _IMAGE_TAG.sub("", prompt, count=1).strip()


def _reference(answer: str, dim: Dimension, file: str, item: Any) -> tuple[float, str]:
    """Score and label of a reference answer, checked: it parses, it is in range, the label fits the score."""
    parsed = parse_answer(answer, dim)
    if not parsed.ok:
        raise CogipError(f"reference answer {answer!r}: {parsed.error}", file=file, item=item)
    if parsed.label is None:
        raise CogipError(f"reference answer {answer!r} has no {dim.name} label", file=file, item=item)
    if parsed.label != dim.label_for(parsed.score):
        raise CogipError(f"label {parsed.label!r} disagrees with score {parsed.score:.3f} "
                         f"(expected {dim.label_for(parsed.score)!r})", file=file, item=item)
    return parsed.score, parsed.label


def dimension_of(image: str, file: str, item: Any) -> Dimension:
    head = image.replace("\\", "/").split("/", 1)[0]
    if head not in DIMENSION_NAMES:
        raise CogipError(f"image path {image!r} does not start with a dimension folder "
                         f"({', '.join(DIMENSION_NAMES)})", file=file, item=item)
    return get_dimension(head)


# ---------------------------------------------------------------- readers

def read_score_list(path: str | os.PathLike, dim: str | Dimension) -> list[tuple[str, float]]:
    """`<file>\\t<score>` lines → [(file, score)], in file order; checks range and duplicates."""
    dim = dim if isinstance(dim, Dimension) else get_dimension(dim)
    path = Path(path)
    if not path.is_file():
        raise CogipError("score list not found", file=str(path))
    rows, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != 2:
            raise CogipError(f"expected '<file><TAB><score>', got {line!r}", file=str(path), item=f"line {n}")
        name, raw = parts[0].strip(), parts[1].strip()
        try:
            score = float(raw)
        except ValueError:
            raise CogipError(f"score {raw!r} is not a number", file=str(path), item=f"line {n}") from None
        if not dim.in_range(score):
            raise CogipError(f"score {score:g} outside [{dim.low:g}, {dim.high:g}]", file=str(path), item=f"line {n}")
        if name in seen:
            raise CogipError(f"image {name} listed twice", file=str(path), item=f"line {n}")
        seen.add(name)
        rows.append((name, score))
    return rows


def _conversation(entry: Any, file: str, i: int) -> tuple[str, str, str, str]:
    if not isinstance(entry, dict) or not {"id", "image", "conversations"} <= entry.keys():
        raise CogipError("expected an object with id, image and conversations", file=file, item=i)
    conv = entry["conversations"]
    if (not isinstance(conv, list) or len(conv) < 2 or not all(isinstance(c, dict) and "value" in c for c in conv[:2])
            or conv[0].get("from") != "human" or conv[1].get("from") != "gpt"):
        raise CogipError("conversations must be [{from: human, value}, {from: gpt, value}]", file=file, item=i)
    image = entry["image"]
    if isinstance(image, list):
        if len(image) != 1:
            raise CogipError(f"expected one image, got {len(image)}", file=file, item=i)
        image = image[0]
    if not isinstance(image, str) or not image:
        raise CogipError("image must be a path string", file=file, item=i)
    return str(entry["id"]), image, conv[0]["value"], conv[1]["value"]


_ANSWER_BODY = re.compile(r"^\s*<answer>(.*)</answer>\s*$", re.S)


def read_training_json(path: str | os.PathLike, grpo: bool | None = False) -> list[BenchItem]:
    """`cognition_training.json` (grpo=False) or `training_grpo.json` (grpo=True) → items; grpo=None takes
    either, item by item (a target in `<answer>…</answer>` is a GRPO item)."""
    file = str(path)
    data = load_json(path)
    if not isinstance(data, list):
        raise CogipError("expected a JSON list of items", file=file)
    items, seen = [], set()
    for i, entry in enumerate(data):
        id_, image, prompt, answer = _conversation(entry, file, i)
        dim = dimension_of(image, file, i)
        if grpo is None:
            m = _ANSWER_BODY.match(answer)
            answer = m.group(1) if m else answer
        elif grpo:
            m = _ANSWER_BODY.match(answer)
            if not m:
                raise CogipError(f"GRPO target {answer!r} is not wrapped in <answer>…</answer>", file=file, item=i)
            answer = m.group(1)
        elif "<image>" not in prompt:
            raise CogipError("prompt has no <image> placeholder", file=file, item=i)
        if (dim.name, id_) in seen:
            raise CogipError(f"duplicated id {id_} in {dim.name}", file=file, item=i)
        seen.add((dim.name, id_))
        score, label = _reference(answer, dim, file, i)
        items.append(BenchItem(id_, dim.name, image, strip_image_tag(prompt), answer.strip(), score, label))
    return items


def read_test_messages(messages_path: str | os.PathLike, scores_path: str | os.PathLike,
                       dim: str | Dimension | None = None) -> list[BenchItem]:
    """A test message file and its score file → items (ids are positions in the file)."""
    mfile, sfile = str(messages_path), str(scores_path)
    messages, answers = load_json(messages_path), load_json(scores_path)
    if not isinstance(messages, list):
        raise CogipError("expected a JSON list of chat messages", file=mfile)
    if not isinstance(answers, list):
        raise CogipError("expected a JSON list of '<label> <score>' strings", file=sfile)
    if len(messages) != len(answers):
        raise CogipError(f"{len(messages)} messages but {len(answers)} scores in {sfile}", file=mfile)
    want = dim if isinstance(dim, Dimension) or dim is None else get_dimension(dim)
    items = []
    for i, (msg, answer) in enumerate(zip(messages, answers)):
        image = text = None
        turns = msg if isinstance(msg, list) else [msg]
        for turn in turns:
            content = turn.get("content") if isinstance(turn, dict) else None
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "image":
                        image = part.get("image")
                    elif isinstance(part, dict) and part.get("type") == "text":
                        text = part.get("text")
        if not isinstance(image, str) or not isinstance(text, str):
            raise CogipError("message needs a user turn with one image and one text part", file=mfile, item=i)
        d = dimension_of(image, mfile, i)
        if want is not None and d.name != want.name:
            raise CogipError(f"image {image!r} is not a {want.name} image", file=mfile, item=i)
        if not isinstance(answer, str):
            raise CogipError(f"expected a '<label> <score>' string, got {answer!r}", file=sfile, item=i)
        score, label = _reference(answer, d, sfile, i)
        items.append(BenchItem(str(i), d.name, image, strip_image_tag(text), answer.strip(), score, label))
    return items


def test_dimension_folders(test_dir: str | os.PathLike, listed_order: bool = False) -> list[str]:
    """The dimension folders of a test message folder, sorted (or in the order the file system lists
    them, as `os.listdir` does); a missing or empty folder, or a folder that names no dimension, is an
    error (never skipped)."""
    test_dir = Path(test_dir)
    if not test_dir.is_dir():
        raise CogipError("test message folder not found", file=str(test_dir))
    names = [n for n in os.listdir(test_dir) if (test_dir / n).is_dir()]
    names = names if listed_order else sorted(names)
    for name in names:
        if name not in DIMENSION_NAMES:
            raise CogipError(f"unknown dimension folder {name!r}; expected one of {', '.join(DIMENSION_NAMES)}",
                             file=str(test_dir / name))
    if not names:
        raise CogipError(f"no dimension folders (expected <Dim>/<Dim>_messages.json for Dim in "
                         f"{', '.join(DIMENSION_NAMES)})", file=str(test_dir))
    return names


def read_test_split(root: str | os.PathLike, dims: Iterable[str] | None = None) -> dict[str, list[BenchItem]]:
    paths = BenchPaths(root)
    out = {}
    for name in dims or DIMENSION_NAMES:
        dim = get_dimension(name)
        out[dim.name] = read_test_messages(paths.messages(dim.name), paths.test_scores(dim.name), dim)
    return out
