"""What a model sees: one training row and one scoring prompt, as text (special tokens shown) and as ids.

`cogip inspect MODEL [--data FILE | --test-dir DIR] [--item N]` prints both for one bench item; the SFT
entry logs the training row of its first item before training (as LLaMA-Factory and trl do), so a wrong
template, a doubled BOS or a mis-tokenized answer shows before any compute is spent.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from .data.layout import BenchItem, read_test_messages, read_training_json, test_dimension_folders
from .data.images import open_image
from .errors import CogipError
from .models.families import FAMILIES, Family, resolve_family


def render(tokenizer, ids: list[int]) -> str:
    """Token ids as text with every special token shown; a run of one repeated special token (an image's
    placeholders) is written once with its count: `<|image_pad|>×64`."""
    special = set(tokenizer.all_special_ids)
    parts = []
    for tid, run in itertools.groupby(ids):
        n = len(list(run))
        if tid in special and n > 1:
            parts.append(f"{tokenizer.convert_ids_to_tokens(tid)}×{n}")
        else:
            parts.append(tokenizer.decode([tid] * n, skip_special_tokens=False))
    return "".join(parts)


def _ids(ids: list[int], limit: int = 40) -> str:
    runs = [f"{t}×{n}" if n > 1 else str(t) for t, n in ((t, len(list(r))) for t, r in itertools.groupby(ids))]
    shown = runs if len(runs) <= limit else runs[:limit // 2] + ["…"] + runs[-limit // 2:]
    return f"[{', '.join(shown)}] ({len(ids)} tokens)"


def training_row(family: Family, processor, item: BenchItem, image_root: str | Path) -> str:
    """The collator's row for `item`: the whole input, and the supervised part (labels)."""
    from .train.data import SFTCollator
    batch = SFTCollator(family, processor)([{"image": str(Path(image_root) / item.image), "prompt": item.prompt,
                                             "answer": item.answer}])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    supervised = [t for t, l in zip(ids, labels) if l != -100]
    tok = processor.tokenizer
    return (f"training row ({item.dimension} {item.image}):\n"
            f"  input:      {render(tok, ids)!r}\n"
            f"  input ids:  {_ids(ids)}\n"
            f"  supervised: {render(tok, supervised)!r}\n"
            f"  labels:     {_ids(supervised)} = {tok.convert_ids_to_tokens(supervised)}")


def scoring_prompt(family: Family, processor, item: BenchItem, image_root: str | Path) -> str:
    """The benchmark loop's prompt for `item`, ending where the model's answer starts."""
    from .evaluate.scorer import BatchPreparer
    batch = BatchPreparer(processor, family, dtype=None)([open_image(Path(image_root) / item.image)], [item.prompt])
    ids = batch["input_ids"][0].tolist()
    return (f"scoring prompt ({item.dimension} {item.image}; the model answers from here):\n"
            f"  input:      {render(processor.tokenizer, ids)!r}\n"
            f"  input ids:  {_ids(ids)}")


def _item(a) -> tuple[BenchItem, Path]:
    if a.data:
        items = read_training_json(a.data)
        root = Path(a.image_root) if a.image_root else Path(a.data).parent / "cognition" / "cognition_images"
        source = a.data
    else:
        dims = [a.dim] if a.dim else test_dimension_folders(a.test_dir)
        d = Path(a.test_dir) / dims[0]
        items = read_test_messages(d / f"{dims[0]}_messages.json", d / f"{dims[0]}_scores.json", dims[0])
        root = Path(a.image_root) if a.image_root else Path(a.test_dir).parent / "cognition" / "cognition_images"
        source = str(d)
    if not 0 <= a.item < len(items):
        raise CogipError(f"--item {a.item}: it has {len(items)} items", file=source)
    item = items[a.item]
    if not (root / item.image).is_file():
        raise CogipError("image not found (pass --image-root)", file=str(root / item.image))
    return item, root


def run(a) -> int:
    if not a.data and not a.test_dir:
        a.test_dir = "data/test_msg_file"
    item, root = _item(a)   # the bench files first: a bad one costs no processor load
    fam = resolve_family(a.model, a.family)
    from .models.adapters import processor_source
    source = processor_source(a.model) if Path(a.model, "adapter_config.json").is_file() else a.model
    processor = fam.load_processor(source)
    print(f"{a.model}: family {fam.name}; BOS {processor.tokenizer.bos_token!r}, end of turn {fam.end_of_turn!r}")
    print(training_row(fam, processor, item, root))
    print(scoring_prompt(fam, processor, item, root))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="print one training row and one scoring prompt as the model sees them",
                       description=__doc__.split("\n")[0])
    p.add_argument("model", help="checkpoint (hub id or folder) or LoRA adapter folder: its processor is used")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="training JSON (cognition_training.json style)")
    src.add_argument("--test-dir", help="test message folder (<Dim>/<Dim>_messages.json); default data/test_msg_file")
    p.add_argument("--dim", help="with --test-dir: the dimension (default: the first folder)")
    p.add_argument("--item", type=int, default=0, help="item index (default 0)")
    p.add_argument("--image-root", help="image folder (default: the bench's cognition/cognition_images)")
    p.add_argument("--family", choices=tuple(FAMILIES), help="default: from the model")
    p.set_defaults(fn=run)
