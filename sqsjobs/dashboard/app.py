"""The Starlette application: routes, the Host and fetch checks, the gate, CSRF on every POST, headers.

Pages are rendered on the server with Jinja2 (autoescape on: every job name, reason, error, payload and
tag came from a message or a record, and is shown as text). The script (static/dashboard.js) only
refreshes a page's live region and asks before a destructive button; the CSP allows no inline script.
Blocking AWS calls run in Starlette's thread pool. A button that acts on one job or batch posts its id in
a hidden field to a fixed path: an id in the path (`x/..`, `.`) could make the browser post elsewhere.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..app import App
from . import actions, pages
from .auth import (
    CSRF_COOKIE,
    PUBLIC,
    SESSION_COOKIE,
    SESSION_S,
    Gate,
    Hosts,
    csrf_refusal,
    fetched_from_elsewhere,
    host_name,
    secure,
)
from .board import FLASH_COOKIE, HERE, Dashboard
from .reading import FailedFilters, Reader

#: A form's body is a few fields: anything larger is refused unread.
MAX_FORM_BYTES = 16 * 1024
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(
    app: App,
    *,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    host: str = "127.0.0.1",
    refresh: float = 5.0,
    allowed_hosts: Iterable[str] | None = None,
) -> Starlette:
    """The dashboard of `app` as a Starlette application (serve it with uvicorn).

    `token`, `user`/`password` default to SQSJOBS_DASHBOARD_TOKEN / _USER / _PASSWORD. `host` is where it
    will listen: anything but loopback without a token or basic auth is refused (ConfigurationError).
    `allowed_hosts`: the host names it answers besides loopback's and `host` (default:
    SQSJOBS_DASHBOARD_ALLOWED_HOSTS, comma-separated); any other Host header gets 400.
    `refresh`: seconds between the live pages' refreshes (0: never).
    """
    settings = app.settings
    gate = Gate(
        token=token or (settings.dashboard_token.get_secret_value() if settings.dashboard_token else None),
        user=user or settings.dashboard_user,
        password=password or (settings.dashboard_password.get_secret_value() if settings.dashboard_password else None),
    )
    gate.require_for(host)
    names = settings.dashboard_allowed_hosts.split(",") if allowed_hosts is None else allowed_hosts
    board = Dashboard(app, gate, refresh, Hosts.of(host, names, gate))
    routes = [
        Route("/healthz", _healthz),
        Route("/login", _login_form(board), methods=["GET"]),
        Route("/login", _action(board, _login), methods=["POST"]),
        Route("/logout", _action(board, _logout), methods=["POST"]),
        *pages.routes(board),
        Route("/queues/{queue}/pause", _action(board, _queue_action(actions.pause, by=True)), methods=["POST"]),
        Route("/queues/{queue}/continue", _action(board, _queue_action(actions.resume)), methods=["POST"]),
        Route("/failed/retry", _action(board, _failed_selected(actions.retry_selected)), methods=["POST"]),
        Route("/failed/forget", _action(board, _failed_selected(actions.forget_selected)), methods=["POST"]),
        Route("/failed/retry-one", _action(board, _failed_one(actions.retry)), methods=["POST"]),
        Route("/failed/forget-one", _action(board, _failed_one(actions.forget)), methods=["POST"]),
        Route("/batches/cancel", _action(board, _batch_cancel), methods=["POST"]),
        Route("/jobs/cancel", _action(board, _job_cancel), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_Guard, board=board)])


class _Guard(BaseHTTPMiddleware):
    """Before every path but /healthz: the Host check, the fetch check, the gate (but on public paths).
    A CSRF cookie for every browser, security headers on every response."""

    def __init__(self, app: Any, board: Dashboard) -> None:
        super().__init__(app)
        self.board = board

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = self.refusal(request)
        if response is None:
            response = await call_next(request)
        new = getattr(request.state, "new_csrf", None)
        if new is not None:
            response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", secure=secure(request), path="/")
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def refusal(self, request: Request) -> Response | None:
        path = request.url.path
        if path == PUBLIC[0]:  # a load balancer's health check names the target's address: any Host
            return None
        host = request.headers.get("host", "")
        if not self.board.hosts.allows(host):
            name = host_name(host)
            if name is None:
                return PlainTextResponse(
                    f"refused: the Host header {host[:100]!r} is not a host name (or [IPv6 address]) with an "
                    "optional :port",
                    400,
                )
            return PlainTextResponse(
                f"refused: this dashboard does not answer the host name {name[:100]!r}; if it is "
                "yours, add it with --allowed-host or SQSJOBS_DASHBOARD_ALLOWED_HOSTS",
                400,
            )
        if fetched_from_elsewhere(request):
            if request.method == "GET" and request.headers.get("sec-fetch-mode") == "navigate":
                return _elsewhere(request)
            return PlainTextResponse("refused: another site sent this request", 403)
        gate = self.board.gate
        if path in PUBLIC[:2] or path.startswith(PUBLIC[2]) or gate.allows(request):
            return None
        if gate.user and not gate.token:
            return PlainTextResponse(
                "authentication required", 401, {"WWW-Authenticate": 'Basic realm="sqsjobs", charset="UTF-8"'}
            )
        if request.method == "GET":
            return RedirectResponse("/login?" + urlencode({"next": path}), 303)
        return PlainTextResponse("authentication required", 401)


def _elsewhere(request: Request) -> Response:
    """A link from another site: nothing read, one link to the same address (a click on it is ours)."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(request.url.path)
    target = "/" + path.lstrip("/") + (f"?{request.url.query}" if request.url.query else "")
    link = html.escape(target, quote=True)
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sqsjobs dashboard</title>'
        '<link rel="stylesheet" href="/static/dashboard.css"></head><body><main>'
        "<p>This address was opened from another site. The dashboard's pages act on your queues (reading "
        "the failed jobs hides them while they are read), so they open only from its own pages, a bookmark "
        f'or the address bar.</p><p><a href="{link}" data-testid="continue-here">Open {link}</a></p>'
        "</main></body></html>",
        403,
    )


# -- POST -----------------------------------------------------------------------------------------

Handler = Callable[[Dashboard, Request, dict[str, str]], Awaitable[Response]]


def _action(board: Dashboard, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Every POST goes through here: a bounded form, its CSRF token and origin checked (403 if not)."""

    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            return PlainTextResponse("form too large", 413)
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        why = csrf_refusal(request, form)
        if why is not None:
            return PlainTextResponse(f"refused: {why}", 403)
        return await handler(board, request, form)

    return endpoint


def _done(request: Request, target: str, message: str) -> Response:
    """Back to the page the button was on, with what happened shown once there."""
    response = RedirectResponse(target if target.startswith("/") and not target.startswith("//") else "/", 303)
    encoded = base64.urlsafe_b64encode(json.dumps(message[:2000]).encode()).decode()
    response.set_cookie(FLASH_COOKIE, encoded, httponly=True, samesite="strict", secure=secure(request), path="/")
    return response


async def _run(request: Request, target: str, work: Callable[[], str]) -> Response:
    try:
        message = await run_in_threadpool(work)
    except actions.Refused as exc:
        message = f"Not done: {exc}"
    return _done(request, target, message)


def _queue_action(operation: Callable[..., str], *, by: bool = False) -> Handler:
    async def handler(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
        queue = request.path_params["queue"]
        who = _who(board, request)
        return await _run(
            request,
            form.get("back", "/queues"),
            (lambda: operation(board.reader, queue, who)) if by else (lambda: operation(board.reader, queue)),
        )

    return handler


def _id(form: dict[str, str]) -> str:
    found = form.get("id", "")
    if not found:
        raise actions.Refused("no id in the form (use the page's buttons)")
    return found


def _failed_one(operation: Callable[[Reader, str, str, str], str]) -> Handler:
    """A row's button: its job id, the queue whose DLQ it was read from, its copy's message id."""

    async def handler(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
        return await _run(
            request,
            form.get("back", "/failed"),
            lambda: operation(board.reader, _id(form), form.get("queue", ""), form.get("message", "")),
        )

    return handler


def _failed_selected(operation: Callable[[Reader, Any], str]) -> Handler:
    async def handler(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
        if form.get("bulk") != "1":  # only the page's bulk forms say so: no other form acts on many jobs
            return PlainTextResponse("refused: not a bulk form of the failed page (it says bulk=1)", 400)
        filters = FailedFilters.of(form)
        back = "/failed" + ("?" + urlencode(filters.query()) if filters.query() else "")
        return await _run(request, back, lambda: operation(board.reader, filters))

    return handler


async def _batch_cancel(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
    return await _run(request, "/batches", lambda: actions.cancel_batch(board.reader, _id(form)))


async def _job_cancel(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
    job_id = form.get("id", "")
    back = f"/jobs/{quote(job_id, safe='')}" if job_id else "/jobs"
    return await _run(request, back, lambda: actions.cancel_job(board.reader, _id(form)))


def _who(board: Dashboard, request: Request) -> str:
    client = request.client.host if request.client else "?"
    return f"dashboard ({board.gate.user or ('token' if board.gate.token else 'local')}) from {client}"


# -- the way in -----------------------------------------------------------------------------------


async def _healthz(request: Request) -> Response:
    """For a load balancer: the process answers. No AWS call (a health check every few seconds would cost)."""
    return PlainTextResponse("ok")


def _login_form(board: Dashboard) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if board.gate.open:
            return RedirectResponse("/", 303)
        return board.render(request, "login.html", next=_next(request.query_params.get("next")), failed=False)

    return endpoint


async def _login(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
    target = _next(form.get("next"))
    if not board.gate.token_matches(form.get("token", "")):
        return board.render(request, "login.html", status=401, next=target, failed=True)
    response = RedirectResponse(target, 303)
    response.set_cookie(
        SESSION_COOKIE,
        board.gate.new_session(),
        max_age=SESSION_S,
        httponly=True,
        samesite="strict",
        secure=secure(request),
        path="/",
    )
    return response


async def _logout(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
    """Ends this browser's session (the cookie is cleared; a stolen copy stays valid until it expires:
    changing the token ends every session)."""
    response = RedirectResponse("/login" if board.gate.token else "/", 303)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure(request), httponly=True, samesite="strict")
    return response


def _next(value: str | None) -> str:
    """Only a path of this site (never `//host` or a URL): a login must not redirect elsewhere."""
    return value if value and value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"
