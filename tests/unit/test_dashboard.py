"""`sqsjobs dashboard` against an App on moto: the pages show real data, escape what messages say, and
their buttons are the CLI's operations behind the gate and the CSRF check."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from typing import Any, ClassVar

import pytest
from starlette.testclient import TestClient

from sqsjobs import App, Job, PermanentError, aws, batch, workers
from sqsjobs.batches import find_batch
from sqsjobs.dashboard.app import create_app
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dlq_url

TOKEN = "dashboard-test-token-0123456789"
#: Where a browser on this machine reaches the default dashboard.
LOCAL = "http://127.0.0.1:8484"


class Flaky(Job, name="dashboard.flaky"):
    """Fails for good until `healed`, then runs."""

    queue = "default"
    tries = 1
    healed: ClassVar[bool] = False
    ran: ClassVar[list[int]] = []
    n: int

    def job_tags(self) -> list[str]:
        return [f"flaky:{self.n}"]

    def handle(self) -> None:
        if not Flaky.healed:
            raise PermanentError(f"not yet <script>alert({self.n})</script>")
        Flaky.ran.append(self.n)


class Member(Job, name="dashboard.member"):
    queue = "default"
    n: int

    def handle(self) -> None:
        pass


@pytest.fixture
def app(moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_TABLE", f"{prefix}table")
    monkeypatch.setenv("SQSJOBS_JOB_LOG", "true")
    monkeypatch.setenv("SQSJOBS_WORKER_BEAT", "0")
    application = App(connection="sqs", visibility_timeout=30, queues=["default"])
    provision(application, ["default"], bucket=False)
    Flaky.healed, Flaky.ran = False, []
    with application.activate():
        yield application


def web(application: App, **options: Any) -> TestClient:
    """The dashboard as a browser on this machine reaches it (its Host header is 127.0.0.1:8484)."""
    return TestClient(create_app(application, **options), base_url=LOCAL)


def work(app: App) -> None:
    Worker(app, WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True)).run(install_signals=False)


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def row(page: str, job_id: str) -> dict[str, str]:
    """What a failed row's buttons post: its id, the queue whose DLQ it came from, its copy's message id."""
    found = re.search(
        rf'name="id" value="{re.escape(job_id)}"><input type="hidden" name="queue" value="([^"]+)">'
        r'<input type="hidden" name="message" value="([^"]+)">',
        page,
    )
    assert found, f"no row for {job_id}"
    return {"csrf": csrf(page), "id": job_id, "queue": found.group(1), "message": found.group(2)}


def dlq_depth(app: App) -> int:
    """Every message of the default queue's DLQ, visible or not (reading them would hide them)."""
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=dlq_url(app, "default"),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def failed_once(app: App, n: int = 1) -> str:
    job_id = Flaky(n=n).dispatch().job_id
    work(app)
    assert dlq_depth(app) == 1
    return str(job_id)


def test_the_pages_show_queues_failed_jobs_batches_and_the_job_log(app: App) -> None:
    failed_id = failed_once(app, 7)
    done = batch([Member(n=1), Member(n=2)]).name("two").dispatch()
    work(app)
    client = web(app)

    overview = client.get("/")
    assert overview.status_code == 200
    assert 'data-testid="queue-row" data-queue="default"' in overview.text
    assert re.search(r'data-testid="dlq-depth">\s*<a[^>]*>1</a>', overview.text)
    assert 'data-testid="workers-count">0<' in overview.text
    for chart in ("chart-throughput", "chart-failure-rate", "chart-wait", "chart-runtime"):
        assert f'data-testid="{chart}"' in overview.text

    failed = client.get("/failed")
    assert f'data-testid="failed-row" data-job-id="{failed_id}"' in failed.text
    assert "permanent" in failed.text
    show = client.get(f"/failed/{failed_id}")
    assert show.status_code == 200 and "&#34;n&#34;: 7" in show.text  # the payload, as text
    assert client.get("/failed/no-such-job").status_code == 404

    batches = client.get("/batches").text
    row = re.search(r'data-testid="batch-row" data-batch-id="' + done.id + r'".*?</tr>', batches, re.S)
    assert row, batches
    assert 'aria-valuenow="100"' in row.group(0) and 'data-processed="2"' in row.group(0)
    assert 'data-total="2"' in row.group(0) and 'data-testid="cancel-batch"' not in row.group(0)

    tagged = client.get("/jobs", params={"tag": "flaky:7"}).text
    assert f'data-testid="job-row" data-job-id="{failed_id}"' in tagged
    newest = client.get("/jobs").text
    assert newest.count('data-testid="job-row"') == 3
    job = client.get(f"/jobs/{failed_id}").text
    assert re.search(r'data-testid="job-status"[^>]*>failed<', job)
    assert client.get("/schedules").status_code == 200
    assert client.get("/healthz").text == "ok"


def test_what_a_message_says_is_shown_as_text_never_markup(app: App) -> None:
    failed_once(app, 3)
    aws.client("sqs").send_message(
        QueueUrl=dlq_url(app, "default"),
        MessageBody='{"job": "<img src=x onerror=alert(1)>"}',
        MessageAttributes={
            "sqsjobs.reason": {"DataType": "String", "StringValue": "tries_exhausted"},
            "sqsjobs.error": {"DataType": "String", "StringValue": "<b onmouseover=alert(2)>hi</b>"},
            "sqsjobs.job": {"DataType": "String", "StringValue": "<svg/onload=alert(3)>"},
        },
    )
    page = web(app).get("/failed").text
    assert "<script>alert(3)</script>" not in page and "&lt;script&gt;alert(3)&lt;/script&gt;" in page
    assert "<svg/onload" not in page and "&lt;svg/onload=alert(3)&gt;" in page
    assert "<b onmouseover" not in page and "&lt;b onmouseover=alert(2)&gt;" in page


def test_every_response_carries_the_security_headers(app: App) -> None:
    response = web(app).get("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in response.text  # the one script is a file: no inline script to allow


def test_it_refuses_to_listen_beyond_loopback_without_a_token(app: App) -> None:
    from sqsjobs.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="SQSJOBS_DASHBOARD_TOKEN"):
        create_app(app, host="0.0.0.0")
    create_app(app, host="127.0.0.1")
    create_app(app, host="0.0.0.0", token=TOKEN)
    create_app(app, host="10.1.2.3", user="ops", password="a-long-password")


def test_a_token_login_sets_a_strict_httponly_session(app: App) -> None:
    client = web(app, token=TOKEN, host="0.0.0.0")
    first = client.get("/queues", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/login")
    login = client.get("/login")
    wrong = client.post("/login", data={"csrf": csrf(login.text), "token": "not-the-token-at-all"})
    assert wrong.status_code == 401
    ok = client.post(
        "/login", data={"csrf": csrf(login.text), "token": TOKEN, "next": "/queues"}, follow_redirects=False
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/queues"
    cookie = ok.headers["set-cookie"].lower()
    assert "sqsjobs_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/queues").status_code == 200
    assert client.get("/healthz").status_code == 200
    stranger = web(app, token=TOKEN, host="0.0.0.0")
    assert stranger.get("/queues", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert stranger.get("/queues", headers={"Authorization": "Bearer nope"}, follow_redirects=False).status_code == 303


def test_basic_auth_asks_for_credentials(app: App) -> None:
    client = web(app, user="ops", password="a-long-password", host="0.0.0.0")
    refused = client.get("/")
    assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
    assert client.get("/", auth=("ops", "a-long-password")).status_code == 200
    assert client.get("/", auth=("ops", "wrong-password!")).status_code == 401


def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(app: App) -> None:
    client = web(app)
    token = csrf(client.get("/queues").text)
    assert client.post("/queues/default/pause", data={}).status_code == 403
    assert client.post("/queues/default/pause", data={"csrf": "x" * 43}).status_code == 403
    other = client.post("/queues/default/pause", data={"csrf": token}, headers={"Origin": "https://evil.example"})
    assert other.status_code == 403
    assert client.post("/queues/default/pause", data={"csrf": token}, headers={"Origin": "null"}).status_code == 403
    assert workers.paused_queues(app.store) == {}
    fresh = web(app)  # a browser without the cookie, replaying someone's token
    assert fresh.post("/queues/default/pause", data={"csrf": token}).status_code == 403


def default_row(page: str) -> str:
    found = re.search(r'data-testid="queue-row" data-queue="default".*?</tr>', page, re.S)
    assert found, page
    return found.group(0)


def test_pause_and_continue_flip_the_queue(app: App) -> None:
    client = web(app)
    page = client.get("/queues").text
    assert 'data-testid="pause"' in default_row(page) and 'data-testid="continue"' not in default_row(page)
    done = client.post("/queues/default/pause", data={"csrf": csrf(page)}, headers={"Origin": LOCAL})
    assert done.status_code == 200 and "Paused default" in done.text
    assert set(workers.paused_queues(app.store)) == {"default"}
    page = client.get("/queues").text
    assert 'data-testid="continue"' in default_row(page) and 'data-testid="pause"' not in default_row(page)
    client.post("/queues/default/continue", data={"csrf": csrf(page)})
    assert workers.paused_queues(app.store) == {}
    assert "not a queue of this app" in client.post("/queues/nope/pause", data={"csrf": csrf(page)}).text


def test_retry_from_the_page_requeues_the_failed_job_and_a_worker_runs_it(app: App) -> None:
    job_id = failed_once(app, 5)
    client = web(app)
    page = client.get("/failed").text
    Flaky.healed = True
    done = client.post("/failed/retry-one", data=row(page, job_id))
    assert f"Retried {job_id} from default's DLQ (1 DLQ copy deleted)." in unescape(done.text)
    assert dlq_depth(app) == 0
    work(app)
    assert Flaky.ran == [5]
    assert 'data-testid="failed-row"' not in client.get("/failed").text


def test_retry_of_the_filter_acts_only_on_what_it_selects(app: App) -> None:
    failed_once(app, 1)
    client = web(app)
    page = client.get("/failed", params={"reason": "timeout"}).text
    assert "No failed jobs match." in page
    token = csrf(client.get("/queues").text)
    done = client.post("/failed/retry", data={"csrf": token, "reason": "timeout", "bulk": "1"})
    assert "Retried 0 job(s)." in done.text and dlq_depth(app) == 1
    bad = client.get("/failed", params={"since": "yesterday-ish"})
    assert bad.status_code == 400
    Flaky.healed = True
    done = client.post("/failed/retry", data={"csrf": token, "reason": "permanent", "queue": "default", "bulk": "1"})
    assert "Retried 1 job(s)." in done.text
    work(app)
    assert Flaky.ran == [1]


def test_forget_removes_the_failed_job(app: App) -> None:
    job_id = failed_once(app, 9)
    client = web(app)
    page = client.get("/failed").text
    done = client.post("/failed/forget-one", data=row(page, job_id))
    assert f"Forgot {job_id} from default's DLQ (1 DLQ copy deleted)." in unescape(done.text)
    assert dlq_depth(app) == 0
    assert "No failed jobs." in client.get("/failed").text


def test_cancel_a_batch_from_its_row(app: App) -> None:
    pending = batch([Member(n=1), Member(n=2)]).dispatch()
    client = web(app)
    page = client.get("/batches").text
    assert 'data-testid="cancel-batch"' in page and 'aria-valuenow="0"' in page
    done = client.post("/batches/cancel", data={"csrf": csrf(page), "id": pending.id})
    assert "Cancelled batch" in done.text
    found = find_batch(pending.id, app)
    assert found is not None and found.cancelled
    assert 'data-state="cancelled"' in client.get("/batches").text


def test_the_cli_refuses_to_serve_beyond_loopback_without_a_gate(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from sqsjobs.cli import cli

    result = CliRunner().invoke(cli, ["dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "SQSJOBS_DASHBOARD_TOKEN" in result.output
    short = CliRunner().invoke(cli, ["dashboard", "--host", "0.0.0.0", "--token", "short"])
    assert short.exit_code == 2 and "at least 16 characters" in short.output
