"""What every request of the dashboard shares: the App's reads, the gate, the templates, the page render."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from .._version import __version__
from ..app import App
from .auth import CSRF_FIELD, Gate, Hosts, csrf_token
from .reading import Reader

HERE = Path(__file__).parent
FLASH_COOKIE = "sqsjobs_flash"


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name: nothing from a message is markup
        undefined=jinja2.StrictUndefined,
    )
    env.globals["version"] = __version__
    env.globals["csrf_field"] = CSRF_FIELD
    env.filters["seg"] = segment
    return env


def segment(value: Any) -> str:
    """One path segment from data (an id, a name), with `/`, `?`, `#` and `%` quoted: Jinja's `urlencode`
    keeps `/`, so an id `x/..` made a link the browser resolved to its parent. An id of `.` or `..` still
    resolves elsewhere: fine for a link (a GET), and why no button puts an id in its path."""
    return quote(str(value), safe="")


class Dashboard:
    """Everything a request needs: the App's reads, the gate, the host names, the templates."""

    def __init__(self, app: App, gate: Gate, refresh: float, hosts: Hosts) -> None:
        self.app = app
        self.gate = gate
        self.hosts = hosts
        self.reader = Reader(app)
        self.refresh = refresh
        self.env = templates()

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        flash = read_flash(request)
        context.setdefault("live", False)
        html = self.env.get_template(name).render(
            request=request,
            path=request.url.path,
            csrf=csrf_token(request),
            refresh=self.refresh,
            flash=flash,
            gate_open=self.gate.open,
            logout=bool(self.gate.token),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if flash:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return response


def read_flash(request: Request) -> str:
    value = request.cookies.get(FLASH_COOKIE)
    if not value:
        return ""
    try:
        message = json.loads(base64.urlsafe_b64decode(value.encode()))
    except ValueError:
        return ""
    return message if isinstance(message, str) else ""
