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
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sqsjobs.app import App

__all__ = ["DashboardHandler", "handler"]

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
            extra = [h for h in app.settings.dashboard_allowed_hosts.split(",") if h.strip()]
            # Not loopback: create_app refuses to build without a token or basic auth.
            self._asgi = create_app(app, host=domain, allowed_hosts=[domain, *extra], refresh=0)
        return self._asgi

    def __call__(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        domain = str(event.get("requestContext", {}).get("domainName") or "localhost")
        return asyncio.run(_request(self.asgi(domain), event, domain))


async def _request(asgi: Asgi, event: dict[str, Any], domain: str) -> dict[str, Any]:
    http = event.get("requestContext", {}).get("http", {})
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
    headers = [
        (str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in event.get("headers", {}).items()
    ]
    if event.get("cookies"):  # format 2.0 takes the Cookie header apart; put it back for the app
        headers.append((b"cookie", "; ".join(event["cookies"]).encode("latin-1")))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": str(http.get("method", "GET")).upper(),
        "scheme": "https",
        "path": event.get("rawPath") or "/",
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
