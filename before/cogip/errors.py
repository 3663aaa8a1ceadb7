"""One error type for bad input, so every entry point can print it as one line and exit non-zero; and
how an entry point ends once its outputs are written."""

from __future__ import annotations

from typing import NoReturn


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


def require(requirement: str, why: str) -> None:
    """An installed package older than the code needs: one line naming it (e.g. "transformers>=5.23"),
    instead of an unknown-argument error deep inside the run."""
    from transformers.utils.versions import require_version
    try:
        require_version(requirement)
    except ImportError as e:
        found = str(e).splitlines()[0].split("but found ")[-1].rstrip(".")
        raise CogipError(f"needs {requirement} ({why}); found {found}: pip install -U '{requirement}'") from None


def end_process(code: int) -> NoReturn:
    """End a finished entry point's process now: streams flushed and atexit handlers run (logging,
    multiprocessing, torch's own), then `os._exit`, without the interpreter's teardown of every module
    and object. Its outputs are already written and closed; the teardown only frees what the OS frees
    anyway (a model, CUDA's memory pools, the pinned host memory) and took seconds (docs/benchmarks.md)."""
    import atexit
    import os
    import sys
    atexit._run_exitfuncs()   # what a normal exit runs first (CPython's own hook; os._exit skips it)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed or broken pipe: nothing more to say
            pass
    os._exit(code)
