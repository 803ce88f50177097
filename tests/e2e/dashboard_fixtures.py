"""The pieces the browser tests of the dashboard stand on: Debian's Chromium driven by Playwright, the
dashboard served by uvicorn on a thread, and a page check that reloads until the server has caught up.

Playwright never downloads a browser here (the machines reach package registries only): `make test` installs
Debian's `chromium` and the tests launch that binary. A missing browser fails the tests, never skips them.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright

#: Screenshots kept as test artifacts (build/ is ignored by git); `make dashboard-screenshot` copies one to docs/img.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


def chromium_executable() -> str:
    """The Chromium to launch: `$CHROMIUM`, else `chromium` on PATH; fails the test run when there is none."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not os.access(found, os.X_OK):
        pytest.fail(
            "the dashboard's browser tests need Debian's chromium: `make test` installs it "
            "(apt-get install chromium), or set CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    return found


@contextmanager
def launched_browser() -> Iterator[Browser]:
    """One headless Chromium for a test module (Playwright's sync API over the system binary)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Served:
    """An ASGI app on 127.0.0.1 behind uvicorn, on a thread of this process (it shares our AWS clients)."""

    def __init__(self, asgi: Any) -> None:
        # Bound here and handed to uvicorn: a port picked and let go could be taken before uvicorn binds it.
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(asgi, host="127.0.0.1", port=self.port, log_level="warning", lifespan="auto")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True, name="dashboard-uvicorn"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the dashboard's uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


def reload_until(page: Page, check: Callable[[], None], timeout: float = 20, what: str = "") -> None:
    """Reload `page` until `check` (Playwright `expect`s with short timeouts of their own) passes.

    The pages may refresh themselves, but the tests do not count on it: what a person sees after a reload is
    what the server knows. Each round waits inside `check`'s own expectations, so this loop never sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: {exc}") from None
        page.reload()


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save what the page shows now under build/screenshots/ and return the file."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
