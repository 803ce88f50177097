"""The dashboard behind a Lambda function URL: the same app, its gate required, cookies and forms
carried through the URL's event and response formats (payload 2.0)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from lambda_handlers.dashboard import DashboardHandler
from sqsjobs import App, ConfigurationError
from sqsjobs.provisioning import provision
from sqsjobs.workers import paused_queues

DOMAIN = "abc123.lambda-url.us-east-1.on.aws"
TOKEN = "dashboard-url-token-0123456789"


@pytest.fixture
def app(moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_TABLE", f"{prefix}table")
    monkeypatch.setenv("SQSJOBS_DASHBOARD_TOKEN", TOKEN)
    application = App(connection="sqs", queues=["default"])
    provision(application, ["default"], bucket=False)
    with application.activate():
        yield application


def event(
    method: str, path: str, *, headers: dict[str, str] | None = None, cookies: list[str] | None = None, body: str = ""
) -> dict[str, Any]:
    """A function URL's request as Lambda hands it over (payload format 2.0)."""
    path, _, query = path.partition("?")
    return {
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": query,
        "cookies": cookies or [],
        "headers": {"host": DOMAIN, **(headers or {})},
        "requestContext": {"domainName": DOMAIN, "http": {"method": method, "sourceIp": "203.0.113.9"}},
        "body": base64.b64encode(body.encode()).decode(),
        "isBase64Encoded": True,
    }


def test_every_page_needs_the_token_and_a_token_login_carries_through_the_urls_cookies(app: App) -> None:
    handler = DashboardHandler(app)
    assert handler(event("GET", "/healthz"))["statusCode"] == 200
    stranger = handler(event("GET", "/queues"))
    assert stranger["statusCode"] in (302, 303, 401)  # to the login form, never the page
    assert "default" not in stranger["body"] or stranger["statusCode"] != 200

    login = handler(event("GET", "/login"))
    assert login["statusCode"] == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', login["body"])
    assert csrf is not None
    form = urlencode({"csrf": csrf.group(1), "token": TOKEN, "next": "/queues"})
    signed_in = handler(
        event(
            "POST",
            "/login",
            headers={"content-type": "application/x-www-form-urlencoded", "origin": f"https://{DOMAIN}"},
            cookies=[c.split(";")[0] for c in login["cookies"]],
            body=form,
        )
    )
    assert signed_in["statusCode"] in (302, 303), signed_in["body"][:300]
    session = [c.split(";")[0] for c in signed_in["cookies"]]
    assert session and all("HttpOnly" in c for c in signed_in["cookies"])

    page = handler(event("GET", "/queues", cookies=session))
    assert page["statusCode"] == 200 and not page["isBase64Encoded"]
    assert 'data-testid="queue-row"' in page["body"] and 'data-queue="default"' in page["body"]


def test_a_pause_from_the_url_is_the_clis_pause(app: App) -> None:
    handler = DashboardHandler(app)
    bearer = {"authorization": f"Bearer {TOKEN}"}
    page = handler(event("GET", "/queues", headers=bearer))
    csrf = re.search(r'name="csrf" value="([^"]+)"', page["body"])
    assert page["statusCode"] == 200 and csrf is not None
    done = handler(
        event(
            "POST",
            "/queues/default/pause",
            headers={**bearer, "content-type": "application/x-www-form-urlencoded", "origin": f"https://{DOMAIN}"},
            cookies=[c.split(";")[0] for c in page["cookies"]],
            body=urlencode({"csrf": csrf.group(1)}),
        )
    )
    assert done["statusCode"] in (200, 303), done["body"][:300]
    assert "default" in paused_queues(app.store)


def test_another_host_is_refused_and_no_gate_refuses_to_start(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    forged = event("GET", "/queues", headers={"host": "evil.example", "authorization": f"Bearer {TOKEN}"})
    assert DashboardHandler(app)(forged)["statusCode"] == 400
    monkeypatch.delenv("SQSJOBS_DASHBOARD_TOKEN")
    with pytest.raises(ConfigurationError):
        DashboardHandler(App(connection="sqs", queues=["default"]))(event("GET", "/healthz"))


def test_odd_requests_get_the_dashboards_answers_not_lambda_errors(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = DashboardHandler(app)
    bearer = {"authorization": f"Bearer {TOKEN}"}
    # A percent-encoded path (a job id with a slash and a space, as the pages link it) reaches its page.
    page = handler(event("GET", "/jobs/a%2Fb%20c", headers=bearer))
    assert "<title>Job a/b c" in page["body"]  # its own page (no such job here: a 404 that names it)
    # A header outside latin-1 is not a crash in the adapter.
    assert handler(event("GET", "/queues", headers={**bearer, "x-note": "\u2603"}))["statusCode"] == 200
    # An error inside the app is the dashboard's 500, its traceback only in the log.
    from sqsjobs.dashboard import reading

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the table went away")

    monkeypatch.setattr(reading.Reader, "workers", broken)
    failed = handler(event("GET", "/", headers=bearer))
    assert failed["statusCode"] == 500 and "table went away" not in failed["body"]
    with pytest.raises(ConfigurationError, match="domainName"):
        handler({"rawPath": "/queues", "headers": bearer, "requestContext": {"http": {"method": "GET"}}})
