"""Print the option tables of docs/evaluate.md, docs/train.md and docs/generate.md from the entry points'
own parsers (one line an option), so the reference says what the code takes:

    python scripts/options_doc.py evaluate|train|generate
"""

import argparse
import sys


def rows(actions) -> list[str]:
    out = ["| option | default | what it does |", "| --- | --- | --- |"]
    for a in actions:
        if not a.option_strings or a.dest == "help":
            continue
        name = max(a.option_strings, key=len).replace("_", "-")
        default = "" if a.default in (None, argparse.SUPPRESS) else f"`{a.default}`"
        text = " ".join((a.help or "").replace("%%", "%").split()).replace("|", "\\|")
        out.append(f"| `{name}` | {default} | {text} |")
    return out


def main(which: str) -> None:
    if which == "evaluate":
        from cogip.evaluate.cli import build_parser
        print("\n".join(rows(build_parser()._actions)))
    elif which == "train":
        from transformers import HfArgumentParser, TrainingArguments
        from cogip.accel.training import AccelArguments
        from cogip.train.sft import DataArguments, LossArguments, ModelArguments
        for title, cls in (("Model", ModelArguments), ("Data", DataArguments), ("Loss", LossArguments),
                           ("Speed (cogip.accel)", AccelArguments)):
            parser = HfArgumentParser(cls)
            print(f"### {title}\n\n" + "\n".join(rows(parser._actions)) + "\n")
        del TrainingArguments
    elif which == "generate":
        import cogip.generate as g
        parser = g.build_parser()
        print("\n".join(rows(parser._actions)))


if __name__ == "__main__":
    main(sys.argv[1])
