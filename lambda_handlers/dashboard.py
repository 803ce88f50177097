"""The dashboard as a Lambda function URL (docs/dashboard.md): no server to run for a team on Lambda.

Handler `lambda_handlers.dashboard.handler`, configured like the SQS function (SQSJOBS_APP, the
table, the queues) plus SQSJOBS_DASHBOARD_TOKEN or SQSJOBS_DASHBOARD_USER/_PASSWORD: a function URL is
reachable from the internet, so the dashboard's own gate is required, exactly as for any host other
than loopback. A function URL event (payload format 2.0) becomes one ASGI request to the same
Starlette app `sqsjobs dashboard` serves; the answer goes back as the URL's response. Here rather than
an adapter package: the function URL's format is small, and a dependency for it would be one more
thing to trust.

Only the dashboard function imports this module (and Starlette): the SQS function's cold start does
not pay for it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from sqsjobs.app import App
from sqsjobs.errors import ConfigurationError

__all__ = ["DashboardHandler", "handler"]

log = logging.getLogger("sqsjobs.dashboard")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Asgi = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

#: Content types sent as text; anything else (images, fonts) goes back base64-encoded, as the URL requires.
_TEXT = ("text/", "application/json", "application/javascript", "image/svg+xml")


class DashboardHandler:
    """One per container: the App and the dashboard are built on the first request, when the URL's own
    domain is known (it is the one Host the dashboard answers, besides SQSJOBS_DASHBOARD_ALLOWED_HOSTS)."""

    def __init__(self, app: App | None = None) -> None:
        self._app = app
        self._asgi: Asgi | None = None

    def asgi(self, domain: str) -> Asgi:
        if self._asgi is None:
            from sqsjobs.dashboard.app import create_app

            app = self._app
            if app is None:
                app = App(connection="sqs")
                app.load_jobs()
            settings = app.settings
            if not settings.dashboard_token and not (settings.dashboard_user and settings.dashboard_password):
                # Whatever the request says its host is: a function URL is public.
                raise ConfigurationError(
                    "the dashboard function needs SQSJOBS_DASHBOARD_TOKEN (or SQSJOBS_DASHBOARD_USER and "
                    "SQSJOBS_DASHBOARD_PASSWORD): a function URL is reachable from the internet"
                )
            extra = [h for h in settings.dashboard_allowed_hosts.split(",") if h.strip()]
            self._asgi = create_app(app, host=domain, allowed_hosts=[domain, *extra], refresh=0)
        return self._asgi

    def __call__(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        domain = event.get("requestContext", {}).get("domainName")
        if not isinstance(domain, str) or not domain:
            raise ConfigurationError("not a function URL event (no requestContext.domainName)")
        asgi = self.asgi(domain)
        try:
            return asyncio.run(_request(asgi, event, domain))
        except Exception:
            # The dashboard's own 500, not Lambda's generic 502; the traceback stays in the function's log.
            log.exception("the dashboard failed on %s", event.get("rawPath"))
            return {"statusCode": 500, "headers": {"content-type": "text/plain"}, "body": "internal error"}


async def _request(asgi: Asgi, event: dict[str, Any], domain: str) -> dict[str, Any]:
    http = event.get("requestContext", {}).get("http", {})
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
    headers = [
        # latin-1 by HTTP's tradition, but a client may send anything: UTF-8 never fails to encode.
        (str(k).lower().encode("utf-8"), str(v).encode("utf-8"))
        for k, v in event.get("headers", {}).items()
    ]
    if event.get("cookies"):  # format 2.0 takes the Cookie header apart; put it back for the app
        headers.append((b"cookie", "; ".join(event["cookies"]).encode("utf-8")))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": str(http.get("method", "GET")).upper(),
        "scheme": "https",
        "path": unquote(event.get("rawPath") or "/"),  # ASGI's path is decoded; raw_path as sent
        "raw_path": (event.get("rawPath") or "/").encode(),
        "query_string": (event.get("rawQueryString") or "").encode(),
        "root_path": "",
        "headers": headers,
        "server": (domain, 443),
        "client": (str(http.get("sourceIp", "")), 0),
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 500
    out_headers: dict[str, str] = {}
    cookies: list[str] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for key, value in message.get("headers", []):
                name, text = key.decode("latin-1").lower(), value.decode("latin-1")
                if name == "set-cookie":
                    cookies.append(text)  # the URL sets each from its own list, never folded
                else:
                    out_headers[name] = f"{out_headers[name]}, {text}" if name in out_headers else text
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await asgi(scope, receive, send)
    payload = b"".join(chunks)
    binary = not out_headers.get("content-type", "text/").startswith(_TEXT)
    return {
        "statusCode": status,
        "headers": out_headers,
        "cookies": cookies,
        "body": base64.b64encode(payload).decode() if binary else payload.decode("utf-8", "replace"),
        "isBase64Encoded": binary,
    }


handler = DashboardHandler()
