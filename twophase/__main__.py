"""`python -m twophase ...`: the command line (see twophase/cli.py)."""

import sys

from twophase.cli import main

if __name__ == "__main__":
    sys.exit(main())
