"""A chaos soak: thousands of mixed jobs through killed-and-restarted workers on moto, then checks.

`python -m tests.soak --help`; `tests/e2e/test_soak.py` runs a 400-job slice; docs/reliability.md
says what it does, what it checks and how to read a failure.
"""
