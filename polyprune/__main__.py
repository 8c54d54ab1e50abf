"""``python -m polyprune ...``: the command line, also under ``torchrun ... -m polyprune scan``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
