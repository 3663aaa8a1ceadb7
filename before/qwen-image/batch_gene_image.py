"""Generate with the default and the aligned Qwen-Image text encoder; see `python batch_gene_image.py -h`.
A thin entry point: everything lives in cogip.generate."""

import sys

from cogip.generate import main

if __name__ == "__main__":
    sys.exit(main())
