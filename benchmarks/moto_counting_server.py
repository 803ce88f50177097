"""moto's server in its own process, counting every request it answers.

    python -m benchmarks.moto_counting_server --port 5123

Every AWS request is counted by (access key, service, action), read from the
SigV4 `Authorization` header and `X-Amz-Target`, so the benchmark tells its
actors apart by giving each one its own access key id (moto maps unknown keys
to the default account, so they all see the same queues). Batch calls also
count their entries, and ReceiveMessage the messages it returned, which shows
how full each call was.

    GET  /_counts        {"access key": {"service": {"Action": [calls, entries]}}}
    POST /_counts/reset  forget everything counted so far
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/aws4_request")
_ENTRIES_ACTIONS = {"SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"}

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class CountingMiddleware:
    """Counts requests to `app` and answers /_counts itself (those requests are never counted)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, dict[str, list[int]]]] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in {"/_counts", "/_counts/reset"}:
            return self._control(environ, start_response)
        key, service = "anonymous", _host_service(environ.get("HTTP_HOST", ""))
        match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        if match:
            key, service = match.group(1), match.group(2)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        body = b""
        if target or environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
        action = target.rsplit(".", 1)[-1] if target else _query_action(environ, body)
        entries = 0
        if action in _ENTRIES_ACTIONS:
            try:
                entries = len(json.loads(body).get("Entries", []))
            except (ValueError, AttributeError):
                entries = 0
        if action == "ReceiveMessage":
            # The messages returned are only known from the response.
            chunks = list(self.app(environ, start_response))
            payload = b"".join(chunks)
            try:
                entries = len(json.loads(payload).get("Messages", []))
            except (ValueError, AttributeError):
                entries = 0
            self._add(key, service, action, entries)
            return [payload]
        self._add(key, service, action, entries)
        return self.app(environ, start_response)

    def _add(self, key: str, service: str, action: str, entries: int) -> None:
        with self._lock:
            slot = self._counts.setdefault(key, {}).setdefault(service, {}).setdefault(action, [0, 0])
            slot[0] += 1
            slot[1] += entries

    def _control(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            if environ.get("REQUEST_METHOD") == "POST":
                self._counts = {}
            payload = json.dumps(self._counts).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]


def _host_service(host: str) -> str:
    """`sqs.us-east-1.amazonaws.com` -> `sqs`; a bare 127.0.0.1 host says nothing."""
    first = host.split(".", 1)[0]
    return first if first and not first[0].isdigit() and first != "localhost" else "unknown"


def _query_action(environ: dict[str, Any], body: bytes) -> str:
    """The Action of a query-protocol request (form body or query string), else the HTTP method."""
    for text in (environ.get("QUERY_STRING", ""), body[:4096].decode("latin-1")):
        found = parse_qs(text).get("Action")
        if found:
            return str(found[0])
    return str(environ.get("REQUEST_METHOD", "?"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = CountingMiddleware(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"ready http://{args.host}:{args.port}", flush=True)
    server.serve_forever()  # until the parent terminates it


if __name__ == "__main__":
    main()
