"""One error type for bad input, so every entry point can print it as one line and exit non-zero."""

from __future__ import annotations


class CogipError(Exception):
    """Bad input: names the file and the item, says what is wrong."""

    def __init__(self, message: str, file: str | None = None, item: str | int | None = None):
        self.file, self.item, self.message = file, item, message
        where = ": ".join(str(p) for p in (file, f"item {item}" if item is not None else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


def exit_code(prog: str, fn, *args, **kwargs) -> int:
    """Run an entry point: bad input becomes one line on stderr and exit status 2."""
    import sys
    try:
        fn(*args, **kwargs)
    except CogipError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0
