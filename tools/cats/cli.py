"""``python -m cats.cli`` and the ``cats`` console script: the CLI of ``cats.commands.cli``."""

import sys

from cats.commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
