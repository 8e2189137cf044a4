"""``python -m pacifica.dispatcher``: the same CLI as ``pacifica-dispatcher``."""

from __future__ import annotations

import sys

from pacifica.dispatcher.cli import main

if __name__ == "__main__":
    sys.exit(main())
