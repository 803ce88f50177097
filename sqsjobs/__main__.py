"""`python -m sqsjobs ...`: the same command line as `sqsjobs ...`."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
