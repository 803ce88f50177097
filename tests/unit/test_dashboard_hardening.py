"""The dashboard against a second review: a forged DLQ message whose row's buttons reached a real job in
another queue, a batches page that scanned the whole table every few seconds, a jobs page that called a
sample "newest", and Host headers with trailing junk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from html import unescape

import pytest
from starlette.testclient import TestClient

from sqsjobs import App, aws, batch, job_log
from sqsjobs.batches import list_batches
from sqsjobs.dashboard import reading
from sqsjobs.dashboard.app import create_app
from sqsjobs.provisioning import provision
from tests.helpers import dlq_url
from tests.unit.test_dashboard import TOKEN, Flaky, Member, csrf, failed_once, row, web
from tests.unit.test_dashboard_security import dynamodb_calls


@pytest.fixture
def app(moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_TABLE", f"{prefix}table")
    monkeypatch.setenv("SQSJOBS_JOB_LOG", "true")
    monkeypatch.setenv("SQSJOBS_WORKER_BEAT", "0")
    application = App(connection="sqs", visibility_timeout=30, queues=["default", "high"])
    provision(application, ["default", "high"], bucket=False)
    Flaky.healed, Flaky.ran = False, []
    with application.activate():
        yield application


def depth(app: App, queue: str) -> int:
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=dlq_url(app, queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def forge_in_high(app: App) -> str:
    """A real failed job in default's DLQ, and a message anyone could send to high's claiming its id."""
    legit = failed_once(app, 1)
    sqs = aws.client("sqs")
    copy = sqs.receive_message(QueueUrl=dlq_url(app, "default"), VisibilityTimeout=0)["Messages"][0]
    body = json.loads(copy["Body"])
    body["job"], body["queue"] = "junk.thing", "high"  # the signature no longer checks out
    sqs.send_message(QueueUrl=dlq_url(app, "high"), MessageBody=json.dumps(body))
    return legit


# -- a row acts on its own copy, in its own queue's DLQ ---------------------------------------------------


def test_a_forged_rows_forget_deletes_only_the_forged_message(app: App) -> None:
    legit = forge_in_high(app)
    client = web(app)
    page = client.get("/failed", params={"queue": "high"}).text
    assert f'data-job-id="{legit}"' in page and "(unverified)" in page
    fields = row(page, legit)
    assert fields["queue"] == "high"
    done = unescape(client.post("/failed/forget-one", data=fields).text)
    assert f"Forgot {legit} from high's DLQ (1 DLQ copy deleted)." in done
    assert depth(app, "high") == 0 and depth(app, "default") == 1  # the real job is still there


def test_a_forged_rows_retry_acts_on_its_own_dlq_only(app: App) -> None:
    """The forged body names high as its queue, and high drains into the DLQ it was read from: the CLI's
    rules decide about it there (unsigned here). The real job in default's DLQ is not touched."""
    legit = forge_in_high(app)
    client = web(app)
    fields = row(client.get("/failed", params={"queue": "high"}).text, legit)
    done = unescape(client.post("/failed/retry-one", data=fields).text)
    assert f"Retried {legit} from high's DLQ (1 DLQ copy deleted)." in done
    assert depth(app, "high") == 0 and depth(app, "default") == 1


def test_a_rows_copy_posted_with_another_queue_acts_on_nothing(app: App) -> None:
    legit = forge_in_high(app)
    client = web(app)
    fields = row(client.get("/failed", params={"queue": "high"}).text, legit)
    done = unescape(client.post("/failed/forget-one", data={**fields, "queue": "default"}).text)
    assert f"No failed job {legit} in default's DLQ with the copy the page showed" in done
    unknown = unescape(client.post("/failed/forget-one", data={**fields, "queue": "nope"}).text)
    assert "'nope' is not a queue of this app" in unknown
    assert depth(app, "high") == 1 and depth(app, "default") == 1


def test_the_real_rows_forget_deletes_the_real_job_only(app: App) -> None:
    legit = forge_in_high(app)
    client = web(app)
    fields = row(client.get(f"/failed/{legit}").text, legit)  # the job's page shows the verified copy
    assert fields["queue"] == "default"
    done = unescape(client.post("/failed/forget-one", data=fields).text)
    assert f"Forgot {legit} from default's DLQ (1 DLQ copy deleted)." in done
    assert depth(app, "default") == 0 and depth(app, "high") == 1


# -- /batches: a bounded scan, read when asked ----------------------------------------------------------


def test_the_batches_page_reads_a_bounded_scan_and_is_not_refreshed_on_a_timer(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "SCAN_ITEMS", 100)
    made = batch([Member(n=1)]).dispatch()
    ddb = aws.client("dynamodb")
    for n in range(150):
        ddb.put_item(
            TableName=app.settings.table,
            Item={"pk": {"S": f"other#{n}"}, "sk": {"S": "x"}, "expires_at": {"N": "9999999999"}},
        )
    with dynamodb_calls(app) as calls:
        page = web(app).get("/batches").text
    assert sum(scan["count"] for scan in calls["Scanned"]) <= 100
    assert all(not call.get("ConsistentRead") for call in calls["Scan"])
    assert "The table is larger" in page and 'data-testid="refresh-batches"' in page
    assert 'data-refresh="0"' in page
    assert made.id in [found.id for found in list_batches(app)]  # the CLI still reads the whole table


def test_the_batches_page_shows_at_most_its_rows(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "BATCH_ROWS", 2)
    for n in range(3):
        batch([Member(n=n)]).dispatch()
    page = web(app).get("/batches").text
    assert page.count('data-testid="batch-row"') == 2 and "The table is larger" not in page


# -- /jobs: says what it read; a job by id; a capped tag ----------------------------------------------------


def test_the_jobs_page_says_it_shows_what_it_read_not_the_newest(app: App) -> None:
    page = web(app).get("/jobs").text
    assert "Jobs found in the first 2,000 items of the table read" in page
    assert ">newest<" not in page and 'data-testid="job-id-search"' in page


def test_the_id_box_opens_that_jobs_page(app: App) -> None:
    job_log.queued(app.store, "a/b c", "dashboard.member", "default", "2026-01-01T00:00:00Z", [], 3600)
    client = web(app)
    moved = client.get("/jobs", params={"id": " a/b c "}, follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"] == "/jobs/a%2Fb%20c"
    shown = client.get(moved.headers["location"])
    assert shown.status_code == 200 and "dashboard.member" in shown.text
    dots = client.get("/jobs", params={"id": ".."}, follow_redirects=False)  # /jobs/.. would be /
    assert dots.status_code == 404 and "<code>..</code>" in dots.text


def test_a_tags_list_says_when_it_is_capped(app: App) -> None:
    for n in range(51):
        tags = ["big"] + (["small"] if n < 3 else [])
        job_log.queued(
            app.store, f"job-{n:03d}", "dashboard.member", "default", f"2026-01-01T00:{n:02d}:00Z", tags, 3600
        )
    client = web(app)
    assert 'data-testid="tag-capped"' in client.get("/jobs", params={"tag": "big"}).text
    assert 'data-testid="tag-capped"' not in client.get("/jobs", params={"tag": "small"}).text


# -- Host: a name or [IPv6], an optional :port, nothing else ------------------------------------------------

JUNK = [
    "[::1]evil.example",
    "localhost:8484@evil",
    "localhost,evil.example",
    "localhost:8484:1",
    "localhost:",
    "localhost:port",
    "127.0.0.1 evil.example",
    "localhost/evil",
    "",
]


@pytest.mark.parametrize("host", JUNK)
def test_a_host_header_with_anything_after_the_name_and_port_is_refused(app: App, host: str) -> None:
    page = web(app).get("/queues", headers={"host": host})
    assert page.status_code == 400 and 'name="csrf"' not in page.text
    anything = TestClient(create_app(app, token=TOKEN, host="0.0.0.0", allowed_hosts=["*"]), base_url="http://x.y")
    assert anything.get("/queues", headers={"host": host, "authorization": f"Bearer {TOKEN}"}).status_code == 400


@pytest.mark.parametrize("host", ["localhost:8484", "LOCALHOST.", "[::1]:9000", "127.0.0.1", "[::1]"])
def test_loopback_names_with_or_without_a_port_are_answered(app: App, host: str) -> None:
    page = web(app).get("/queues", headers={"host": host})
    assert page.status_code == 200 and csrf(page.text)
