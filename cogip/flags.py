"""One flag style for every entry point: words joined by dashes (`--model-id`); the underscore spelling
(`--model_id`, as transformers' TrainingArguments print them) is accepted everywhere too."""

from __future__ import annotations


def dashed(argv: list[str] | None) -> list[str] | None:
    """argv with every `--long_flag` spelled `--long-flag` (a value after `=` left as it is)."""
    if argv is None:
        import sys
        argv = sys.argv[1:]
    out = []
    for token in argv:
        if token.startswith("--") and "_" in token.split("=", 1)[0]:
            name, eq, value = token.partition("=")
            token = name.replace("_", "-") + eq + value
        out.append(token)
    return out
