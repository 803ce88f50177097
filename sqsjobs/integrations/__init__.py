"""Adapters to other libraries' transactions, each an extra (`pip install sqsjobs[sqlalchemy]`, `[django]`).

Each one tells `sqsjobs.after_commit` when a transaction begins, commits or rolls back; nothing here is
imported unless you import it (docs/after-commit.md).
"""
