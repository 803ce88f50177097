"""The Starlette application: routes, the gate, CSRF on every POST, security headers, templates.

Pages are rendered on the server with Jinja2 (autoescape on: every job name, reason, error, payload and
tag came from a message or a record, and is shown as text). The script (static/dashboard.js) only
refreshes a page's live region and asks before a destructive button; the CSP allows no inline script.
Blocking AWS calls run in Starlette's thread pool.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..app import App
from . import actions, pages
from .auth import CSRF_COOKIE, PUBLIC, SESSION_COOKIE, SESSION_S, Gate, csrf_refusal, secure
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
) -> Starlette:
    """The dashboard of `app` as a Starlette application (serve it with uvicorn).

    `token`, `user`/`password` default to SQSJOBS_DASHBOARD_TOKEN / _USER / _PASSWORD. `host` is where it
    will listen: anything but loopback without a token or basic auth is refused (ConfigurationError).
    `refresh`: seconds between the live pages' refreshes (0: never).
    """
    settings = app.settings
    gate = Gate(
        token=token or (settings.dashboard_token.get_secret_value() if settings.dashboard_token else None),
        user=user or settings.dashboard_user,
        password=password or (settings.dashboard_password.get_secret_value() if settings.dashboard_password else None),
    )
    gate.require_for(host)
    board = Dashboard(app, gate, refresh)
    routes = [
        Route("/healthz", _healthz),
        Route("/login", _login_form(board), methods=["GET"]),
        Route("/login", _action(board, _login), methods=["POST"]),
        *pages.routes(board),
        Route("/queues/{queue}/pause", _action(board, _queue_action(actions.pause, by=True)), methods=["POST"]),
        Route("/queues/{queue}/continue", _action(board, _queue_action(actions.resume)), methods=["POST"]),
        Route("/failed/retry", _action(board, _failed_selected(actions.retry_selected)), methods=["POST"]),
        Route("/failed/forget", _action(board, _failed_selected(actions.forget_selected)), methods=["POST"]),
        Route("/failed/{job_id}/retry", _action(board, _failed_one(actions.retry)), methods=["POST"]),
        Route("/failed/{job_id}/forget", _action(board, _failed_one(actions.forget)), methods=["POST"]),
        Route("/batches/{batch_id}/cancel", _action(board, _batch_cancel), methods=["POST"]),
        Route("/jobs/{job_id}/cancel", _action(board, _job_cancel), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_Guard, board=board)])


class _Guard(BaseHTTPMiddleware):
    """The gate before every non-public path, a CSRF cookie for every browser, security headers on all."""

    def __init__(self, app: Any, board: Dashboard) -> None:
        super().__init__(app)
        self.board = board

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        public = path in PUBLIC[:2] or path.startswith(PUBLIC[2])
        gate = self.board.gate
        if not public and not gate.allows(request):
            if gate.user and not gate.token:
                response: Response = PlainTextResponse(
                    "authentication required", 401, {"WWW-Authenticate": 'Basic realm="sqsjobs", charset="UTF-8"'}
                )
            elif request.method == "GET":
                response = RedirectResponse("/login?" + urlencode({"next": path}), 303)
            else:
                response = PlainTextResponse("authentication required", 401)
        else:
            response = await call_next(request)
        new = getattr(request.state, "new_csrf", None)
        if new is not None:
            response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", secure=secure(request), path="/")
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


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


def _failed_one(operation: Callable[[Reader, str], str]) -> Handler:
    async def handler(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
        job_id = request.path_params["job_id"]
        return await _run(request, form.get("back", "/failed"), lambda: operation(board.reader, job_id))

    return handler


def _failed_selected(operation: Callable[[Reader, Any], str]) -> Handler:
    async def handler(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
        filters = FailedFilters.of(form)
        back = "/failed" + ("?" + urlencode(filters.query()) if filters.query() else "")
        return await _run(request, back, lambda: operation(board.reader, filters))

    return handler


async def _batch_cancel(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
    batch_id = request.path_params["batch_id"]
    return await _run(request, "/batches", lambda: actions.cancel_batch(board.reader, batch_id))


async def _job_cancel(board: Dashboard, request: Request, form: dict[str, str]) -> Response:
    job_id = request.path_params["job_id"]
    return await _run(request, f"/jobs/{job_id}", lambda: actions.cancel_job(board.reader, job_id))


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


def _next(value: str | None) -> str:
    """Only a path of this site (never `//host` or a URL): a login must not redirect elsewhere."""
    return value if value and value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"
