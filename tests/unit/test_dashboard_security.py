"""The dashboard against the attacks a review found: DNS rebinding of the loopback dashboard, a DLQ job id
that turned a row's Forget into a flush, requests other sites make a browser send, unbounded reads of the
table and the DLQs, and a session that could not be ended."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from starlette.testclient import TestClient

from sqsjobs import App, aws, job_log, workers
from sqsjobs.dashboard import reading
from sqsjobs.dashboard.app import create_app
from sqsjobs.errors import ConfigurationError
from tests.helpers import dlq_url
from tests.unit.test_dashboard import LOCAL, TOKEN, app, csrf, dlq_depth, failed_once, web

__all__ = ["app"]  # the fixture, shared with test_dashboard


@contextmanager
def dynamodb_calls(app: App) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """The DynamoDB requests made inside the block (operation -> their parameters; a Scan's ScannedCount)."""
    seen: dict[str, list[dict[str, Any]]] = {}
    events = app.store.client.meta.events  # type: ignore[attr-defined]

    def before(params: dict[str, Any], model: Any, **_: Any) -> None:
        seen.setdefault(model.name, []).append(dict(params))

    def after(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "Scan":
            seen.setdefault("Scanned", []).append({"count": parsed.get("ScannedCount", 0)})

    events.register("provide-client-params.dynamodb", before)
    events.register("after-call.dynamodb", after)
    try:
        yield seen
    finally:
        events.unregister("provide-client-params.dynamodb", before)
        events.unregister("after-call.dynamodb", after)


# -- 1. DNS rebinding: the Host header ----------------------------------------------------------------


def test_a_rebinding_page_with_another_host_name_can_neither_read_nor_act(app: App) -> None:
    """A page of evil.example whose name now points at 127.0.0.1 is same-origin with the dashboard: it
    could read the CSRF token and post with a matching Origin. Its Host header still says evil.example."""
    ours = web(app)
    token = csrf(ours.get("/queues").text)
    rebound = TestClient(create_app(app), base_url="http://evil.example:8484", cookies=ours.cookies)
    page = rebound.get("/queues")
    assert page.status_code == 400 and 'name="csrf"' not in page.text
    assert "--allowed-host" in page.text
    acted = rebound.post("/queues/default/pause", data={"csrf": token}, headers={"Origin": "http://evil.example:8484"})
    assert acted.status_code == 400
    assert workers.paused_queues(app.store) == {}
    assert rebound.get("/healthz").text == "ok"  # a load balancer's check names the target's address


@pytest.mark.parametrize("base", ["http://127.0.0.1:8484", "http://localhost:9000", "http://[::1]:8484"])
def test_loopback_names_on_any_port_are_answered(app: App, base: str) -> None:
    """`ssh -L 9000:127.0.0.1:8484` brings the dashboard to another local port."""
    assert TestClient(create_app(app), base_url=base).get("/queues").status_code == 200


def test_a_load_balancers_name_is_answered_once_allowed(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    def status(base: str, **options: Any) -> int:
        client = TestClient(create_app(app, token=TOKEN, host="0.0.0.0", **options), base_url=base)
        return client.get("/queues", headers={"Authorization": f"Bearer {TOKEN}"}).status_code

    assert status("https://dashboard.example.com") == 400
    assert status("https://dashboard.example.com", allowed_hosts=["dashboard.example.com"]) == 200
    assert status("https://ops.example.com", allowed_hosts=["*.example.com"]) == 200
    assert status("https://example.org", allowed_hosts=["*.example.com"]) == 400
    assert status("http://10.1.2.3:8484") == 400
    bound = TestClient(create_app(app, token=TOKEN, host="10.1.2.3"), base_url="http://10.1.2.3:8484")
    assert bound.get("/queues", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    monkeypatch.setenv("SQSJOBS_DASHBOARD_ALLOWED_HOSTS", "dashboard.example.com, other.example.com")
    setting = App(connection="sqs", queues=["default"])
    client = TestClient(create_app(setting, token=TOKEN, host="0.0.0.0"), base_url="https://other.example.com")
    assert client.get("/login").status_code == 200


def test_any_host_name_is_refused_for_a_dashboard_without_a_login(app: App) -> None:
    with pytest.raises(ConfigurationError, match="DNS rebinding"):
        create_app(app, allowed_hosts=["*"])
    with pytest.raises(ConfigurationError, match="not a host name"):
        create_app(app, allowed_hosts=["https://dashboard.example.com/"])
    anything = TestClient(create_app(app, token=TOKEN, host="0.0.0.0", allowed_hosts=["*"]), base_url="http://x.y")
    assert anything.get("/login").status_code == 200  # behind a token, the gate is what keeps strangers out


# -- 3. requests other sites make a browser send ------------------------------------------------------


def test_a_request_another_site_makes_is_refused_before_anything_is_read(app: App) -> None:
    failed_once(app)
    client = web(app)
    with dynamodb_calls(app) as calls:
        image = client.get("/failed", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})
        scan = client.get("/jobs", headers={"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"})
    assert image.status_code == 403 and 'data-testid="failed-row"' not in image.text
    assert scan.status_code == 403 and calls == {}
    token = csrf(client.get("/queues").text)
    form = client.post("/queues/default/pause", data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"})
    assert form.status_code == 403 and workers.paused_queues(app.store) == {}


def test_a_link_from_another_site_gets_one_link_back_in(app: App) -> None:
    client = web(app)
    followed = client.get(
        "/failed?queue=default", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    )
    assert followed.status_code == 403 and 'data-testid="failed-row"' not in followed.text
    assert 'href="/failed?queue=default"' in followed.text
    tricky = client.get("//evil.example/x", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert 'href="//' not in tricky.text  # never a link to another host
    for own in ("same-origin", "none"):  # the dashboard's own pages; a typed address or a bookmark
        assert client.get("/failed", headers={"Sec-Fetch-Site": own}).status_code == 200


# -- 2. a hostile DLQ job id ---------------------------------------------------------------------------


def hostile_copy(app: App, job_id: str) -> None:
    """A second DLQ message: a copy of the failed one, its id replaced (anyone who can send to the DLQ)."""
    sqs = aws.client("sqs")
    url = dlq_url(app, "default")
    message = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=0)["Messages"][0]
    body = json.loads(message["Body"])
    body["id"] = job_id
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))


def forms(page: str) -> list[tuple[str, dict[str, str]]]:
    """Each form's action and hidden fields, as a browser would submit them."""
    out = []
    for action, inner in re.findall(r'<form method="post" action="([^"]*)"[^>]*>(.*?)</form>', page, re.S):
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', inner))
        out.append((action, fields))
    return out


@pytest.mark.parametrize("hostile", ["x/..", ".", "..", "a/b?c#d"])
def test_a_rows_forget_forgets_that_job_only_whatever_its_id(app: App, hostile: str) -> None:
    kept = failed_once(app, 1)
    hostile_copy(app, hostile)
    client = web(app)
    page = client.get("/failed").text
    rows = [(action, fields) for action, fields in forms(page) if fields.get("id") == hostile]
    assert len(rows) == 2, page  # its Retry and its Forget
    action, fields = next((a, f) for a, f in rows if "forget" in a)
    target = urlsplit(urljoin(LOCAL + "/failed", action)).path  # where the browser posts it
    assert target == "/failed/forget-one"
    done = client.post(target, data=fields)
    assert f"Forgot {hostile} from default's DLQ" in unescape(done.text)
    assert dlq_depth(app) == 1  # the other failed job is still there
    assert f'data-job-id="{kept}"' in client.get("/failed").text


def test_a_link_to_a_job_with_a_slash_in_its_id_opens_that_job(app: App) -> None:
    failed_once(app, 1)
    hostile_copy(app, "x/..")
    client = web(app)
    link = re.search(r'<a href="(/failed/x[^"]*)">', client.get("/failed").text)
    assert link and link.group(1) == "/failed/x%2F.."
    assert urlsplit(urljoin(LOCAL + "/failed", link.group(1))).path == "/failed/x%2F.."  # no dot segment
    shown = client.get(link.group(1))
    assert shown.status_code == 200 and "Failed job <code>x/..</code>" in shown.text


def test_the_bulk_routes_act_only_for_the_pages_bulk_forms(app: App) -> None:
    failed_once(app, 1)
    client = web(app)
    token = csrf(client.get("/failed").text)
    assert client.post("/failed/forget", data={"csrf": token}).status_code == 400
    assert client.post("/failed/forget-one", data={"csrf": token}).text.count("no id in the form") == 1
    assert dlq_depth(app) == 1


# -- 4. the jobs page reads what it shows, bounded -------------------------------------------------------


def test_without_the_job_log_the_jobs_page_reads_nothing_and_says_how_to_turn_it_on(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQSJOBS_JOB_LOG", "false")
    off = App(connection="sqs", queues=["default"])
    with dynamodb_calls(off) as calls:
        page = web(off).get("/jobs")
    assert page.status_code == 200 and "Scan" not in calls
    assert 'data-testid="job-log-off"' in page.text and "SQSJOBS_JOB_LOG=true" in page.text


def test_the_newest_jobs_are_a_bounded_scan_that_says_when_it_did_not_read_it_all(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "SCAN_ITEMS", 100)
    ddb = aws.client("dynamodb")
    for n in range(150):
        ddb.put_item(
            TableName=app.settings.table,
            Item={"pk": {"S": f"other#{n}"}, "sk": {"S": "x"}, "expires_at": {"N": "9999999999"}},
        )
    with dynamodb_calls(app) as calls:
        page = web(app).get("/jobs").text
    assert sum(scan["count"] for scan in calls["Scanned"]) <= 100
    assert all(not call.get("ConsistentRead") for call in calls["Scan"])
    assert "The table is larger" in page


def test_a_tags_page_costs_one_limited_query_and_at_most_fifty_reads(app: App) -> None:
    for n in range(60):
        job_log.queued(
            app.store,
            f"job-{n:03d}",
            "dashboard.member",
            "default",
            f"2026-01-01T00:{n:02d}:00Z",
            ["customer:42"],
            3600,
        )
    with dynamodb_calls(app) as calls:
        page = web(app).get("/jobs", params={"tag": "customer:42"}).text
    [query] = calls["Query"]
    assert query["Limit"] == 50 and query["ScanIndexForward"] is False
    assert len(calls["GetItem"]) == 50
    rows = re.findall(r'data-testid="job-row" data-job-id="([^"]+)"', page)
    assert rows[:2] == ["job-059", "job-058"] and len(rows) == 50  # the newest first


# -- 6. the overview, the failed page's size, logging out --------------------------------------------------


def test_the_overview_reads_settled_hours_once(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "CHART_CACHE_S", 0.0)
    reads: list[tuple[str, bool]] = []  # (partition, consistent) of each snapshot Query the store makes
    query = app.store.query

    def counted(pk: str, *args: Any, **options: Any) -> Any:
        if pk.startswith("snapshot#default#"):  # this app's queue (others: jobs other tests registered)
            reads.append((pk, bool(options.get("consistent", True))))
        return query(pk, *args, **options)

    # Counted at the store, not with botocore hooks: a hook on the shared client also sees what other
    # tests' leftovers add to it.
    monkeypatch.setattr(app.store, "query", counted)
    client = web(app)
    assert client.get("/", params={"hours": 48}).status_code == 200
    first, reads[:] = list(reads), []
    client.get("/", params={"hours": 48})
    assert len(first) == 49 * 4 and not any(consistent for _, consistent in first)
    assert len(reads) <= 2 * 4  # the current hour, and the last one while it may still change


def test_the_failed_page_lists_a_bounded_number_of_rows_and_counts_them_all(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "FAILED_ROWS", 2)
    failed_once(app, 1)
    for n in (2, 3):
        hostile_copy(app, f"copy-{n}")
    page = web(app).get("/failed").text
    assert page.count('data-testid="failed-row"') == 2
    assert "3 failed job(s)" in page and 'data-testid="failed-capped"' in page
    groups = re.findall(r'data-testid="failed-group">(?:\s*<td>.*?</td>){3}\s*<td>(\d+)</td>', page)
    assert sum(int(jobs) for jobs in groups) == 3  # the counts cover every job, listed or not


def test_log_out_ends_the_session(app: App) -> None:
    client = web(app, token=TOKEN, host="0.0.0.0")
    login = client.get("/login")
    client.post("/login", data={"csrf": csrf(login.text), "token": TOKEN})
    page = client.get("/queues")
    assert page.status_code == 200 and 'data-testid="logout"' in page.text
    assert client.post("/logout", data={}).status_code == 403  # CSRF-checked: no logging people out from afar
    done = client.post("/logout", data={"csrf": csrf(page.text)}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/login"
    assert 'sqsjobs_session=""' in done.headers["set-cookie"] or "max-age=0" in done.headers["set-cookie"].lower()
    again = client.get("/queues", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/login")


def test_the_cli_refuses_an_allowed_host_that_is_not_a_host_name(app: App) -> None:
    from typer.testing import CliRunner

    from sqsjobs.cli import cli

    args = ["dashboard", "--host", "0.0.0.0", "--allowed-host", "https://dashboard.example.com/"]
    result = CliRunner().invoke(cli, args, env={"SQSJOBS_DASHBOARD_TOKEN": TOKEN})
    assert result.exit_code == 2 and "not a host name" in result.output, result.output
