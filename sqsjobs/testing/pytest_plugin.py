"""The `sqsjobs_fake` fixture: `fake()` for the whole test, for suites that fake dispatch everywhere.

Not registered by default (that would import sqsjobs into every pytest run): enable it with
`pytest_plugins = ["sqsjobs.testing.pytest_plugin"]` in a conftest.py, or `-p sqsjobs.testing.pytest_plugin`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake import FakeDispatches, fake


@pytest.fixture
def sqsjobs_fake() -> Iterator[FakeDispatches]:
    """Every job dispatched during the test is recorded, not sent; the app before is current again after."""
    with fake() as dispatched:
        yield dispatched
