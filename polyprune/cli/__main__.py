"""``python -m polyprune.cli ...``: the command line (as ``python -m polyprune ...``)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
