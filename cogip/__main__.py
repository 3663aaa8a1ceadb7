"""`python -m cogip ...`: the `cogip` command (the launchers call it this way, with the repo's Python)."""

import sys

from .cli import main

sys.exit(main(as_process=True))
