"""The dashboard as a person uses it: headless Chromium (Debian's, driven by Playwright) against the dashboard
served by uvicorn, over moto's HTTP server, with real worker subprocesses running the jobs.

One browser for the module; each test gets fresh queues, its own table and a dashboard of its own. Elements are
found by the `data-testid`s the dashboard keeps stable, not by layout. Screenshots land in build/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from sqsjobs import App, batch, workers
from sqsjobs.batches import find_batch
from sqsjobs.dashboard.app import create_app
from tests.e2e.conftest import E2E, Process
from tests.e2e.dashboard_fixtures import Served, launched_browser, reload_until, screenshot
from tests.e2e.e2e_jobs import AlwaysFails, FailsWhileFlagged, Record
from tests.helpers import wait_for

QUEUES = ("default", "emails")
BEAT = "0.3"


@dataclass
class Board:
    """One test's dashboard: the App it shows, the env its workers share with it, the page open on it."""

    e2e: E2E
    app: App
    env: dict[str, str]
    url: str
    page: Page

    def open(self, path: str) -> Page:
        self.page.goto(self.url + path)
        return self.page

    def worker(self, *args: str) -> Process:
        return self.e2e.worker(*args, env=self.env)

    def live_workers(self) -> list[workers.WorkerInfo]:
        return workers.list_workers(self.app.store)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_browser() as launched:
        yield launched


@pytest.fixture
def board(e2e: E2E, browser: Browser) -> Iterator[Board]:
    table = f"{e2e.prefix}table"
    app = e2e.setup(QUEUES, visibility=30, table=table, job_log=True)
    env = e2e.env(SQSJOBS_TABLE=table, SQSJOBS_WORKER_BEAT=BEAT, SQSJOBS_JOB_LOG="1")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    # A confirm() before a destructive action is answered yes, as the person clicking would.
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        with Served(create_app(app)) as served:
            yield Board(e2e, app, env, served.url, page)
    finally:
        context.close()


def queue_row(page: Page, queue: str) -> Locator:
    return page.locator(f'[data-testid="queue-row"][data-queue="{queue}"]')


def failed_row(page: Page, job_id: str) -> Locator:
    return page.locator(f'[data-testid="failed-row"][data-job-id="{job_id}"]')


def line_leaves_the_axis(chart: Locator) -> bool:
    """Whether a chart's SVG line has a point above its baseline (the largest y): some minute counted jobs."""
    points = chart.locator("polyline").get_attribute("points") or ""
    ys = [float(point.split(",")[1]) for point in points.split()]
    return bool(ys) and min(ys) < max(ys)


def test_the_overview_shows_every_queue_the_live_worker_and_throughput(board: Board) -> None:
    (board.e2e.dir / "flag").touch()
    for n in range(3):
        board.e2e.dispatch(Record(tag=f"done{n}"))
    board.e2e.dispatch(FailsWhileFlagged())
    waiting = [board.e2e.dispatch(Record(tag=f"waiting{n}"), queue="emails") for n in range(2)]
    # A worker flushes its minute counters (the charts) when it stops: this one stops after the four runs.
    assert board.worker("--queue", "default", "--max-jobs", "4").wait(30) == 0
    assert board.e2e.queue_depth() == 0 and board.e2e.dlq_depth() == 1
    board.worker("--queue", "default")  # the live one the overview counts

    page = board.open("/")
    for queue in QUEUES:
        expect(queue_row(page, queue)).to_be_visible()
    expect(queue_row(page, "emails").get_by_test_id("queue-depth")).to_have_text(str(len(waiting)))
    expect(queue_row(page, "default").get_by_test_id("dlq-depth")).to_have_text("1")
    reload_until(
        page,
        lambda: expect(page.get_by_test_id("workers-count")).to_have_text("1", timeout=1000),
        what="the worker's beat on the overview",
    )
    throughput = page.get_by_test_id("chart-throughput")
    expect(throughput).to_be_visible()
    assert line_leaves_the_axis(throughput), "the four runs the first worker flushed are on the throughput chart"
    screenshot(page, "overview")

    health = page.request.get(board.url + "/healthz")
    assert health.ok, health.status


def test_a_failed_job_shows_on_failed_and_retry_from_the_page_runs_it(board: Board) -> None:
    flag = board.e2e.dir / "flag"
    flag.touch()
    job = board.e2e.dispatch(FailsWhileFlagged())
    board.worker("--queue", "default")
    board.e2e.wait_mark(job.job_id, "fail")

    page = board.open("/failed")
    row = failed_row(page, job.job_id)
    reload_until(page, lambda: expect(row).to_have_count(1, timeout=1000), what="the failed job on /failed")
    expect(row).to_contain_text("e2e.fails-while-flagged")
    screenshot(page, "failed")

    flag.unlink()
    row.get_by_test_id("retry").click()
    board.e2e.wait_mark(job.job_id, "end", timeout=30)
    # Attempts reset: the retry is its first try again, and it ran once more, not twice.
    assert board.e2e.events(job.job_id) == [("start", 1), ("fail", 1), ("start", 1), ("end", 1)]
    page = board.open("/failed")
    reload_until(page, lambda: expect(row).to_have_count(0, timeout=1000), what="the job gone from /failed")
    assert board.e2e.dlq_depth() == 0

    page = board.open(f"/jobs/{job.job_id}")
    reload_until(
        page,
        lambda: expect(page.get_by_test_id("job-status")).to_contain_text("processed", timeout=1000),
        what="the job log's status on the job's page",
    )


def test_forget_drops_a_failed_job_and_a_post_without_the_csrf_token_changes_nothing(board: Board) -> None:
    job = board.e2e.dispatch(AlwaysFails(tag="forget me"))
    board.worker("--queue", "default")
    board.e2e.wait_mark(job.job_id, "failed:RuntimeError")
    page = board.open("/failed")
    row = failed_row(page, job.job_id)
    reload_until(page, lambda: expect(row).to_have_count(1, timeout=1000), what="the failed job on /failed")

    action = row.get_by_test_id("forget").evaluate("button => button.form && button.form.action")
    assert action, "the forget button submits a form (POST with a CSRF token)"
    forged = page.request.post(str(action), form={}, max_redirects=0)
    assert 400 <= forged.status < 500, f"a POST without the CSRF token answered {forged.status}"
    page.reload()
    expect(row).to_have_count(1)
    assert board.e2e.dlq_depth() == 1

    row.get_by_test_id("forget").click()
    page = board.open("/failed")
    reload_until(page, lambda: expect(row).to_have_count(0, timeout=1000), what="the job gone from /failed")
    assert board.e2e.dlq_depth() == 0
    assert [event for event, _ in board.e2e.events(job.job_id)].count("start") == 2  # tries=2; forgot, not rerun


def test_a_batch_progress_bar_moves_as_its_jobs_complete(board: Board) -> None:
    thumbs = batch([Record(tag=f"thumb{n}") for n in range(4)]).name("thumbnails").dispatch(board.app)

    page = board.open("/batches")
    row = page.get_by_test_id("batch-row").filter(has_text="thumbnails")
    bar = row.get_by_test_id("batch-progress")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(thumbs.id[:8])
    expect(bar).to_have_attribute("aria-valuenow", "0")
    expect(bar).to_have_attribute("data-total", "4")

    # Half of them: a worker that starts two jobs and exits, so the bar is seen half-way.
    assert board.worker("--queue", "default", "--max-jobs", "2").wait(30) == 0
    reload_until(
        page, lambda: expect(bar).to_have_attribute("data-processed", "2", timeout=1000), what="two jobs processed"
    )
    expect(bar).to_have_attribute("aria-valuenow", "50")

    board.worker("--queue", "default")
    reload_until(
        page, lambda: expect(bar).to_have_attribute("aria-valuenow", "100", timeout=1000), what="the batch complete"
    )
    expect(bar).to_have_attribute("data-processed", "4")
    # The last member counts itself, then marks the batch finished: a page rendered between the two
    # writes shows 4 of 4 still running until it is reloaded.
    reload_until(
        page, lambda: expect(row).to_have_attribute("data-state", "finished", timeout=1000), what="the batch finished"
    )
    expect(row.get_by_test_id("cancel-batch")).to_have_count(0)


def test_cancel_on_batches_marks_a_waiting_batch_cancelled(board: Board) -> None:
    waiting = batch([Record(tag="never"), Record(tag="started")]).name("imports").dispatch(board.app)
    page = board.open("/batches")
    row = page.locator(f'[data-testid="batch-row"][data-batch-id="{waiting.id}"]')
    expect(row).to_have_attribute("data-state", "running")

    row.get_by_test_id("cancel-batch").click()
    expect(row).to_have_attribute("data-state", "cancelled")
    expect(row.get_by_test_id("cancel-batch")).to_have_count(0)
    cancelled = find_batch(waiting.id, board.app)
    assert cancelled is not None and cancelled.cancelled


def test_pause_on_queues_stops_the_worker_taking_jobs_and_continue_resumes(board: Board) -> None:
    board.worker("--queue", "default")
    wait_for(board.live_workers, what="the worker's beat")

    page = board.open("/queues")
    queue_row(page, "default").get_by_test_id("pause").click()
    expect(queue_row(page, "default").get_by_test_id("continue")).to_be_visible()
    expect(queue_row(page, "emails").get_by_test_id("pause")).to_be_visible()
    wait_for(lambda: [w for w in board.live_workers() if w.paused == ["default"]], what="the pause seen by the worker")

    job = board.e2e.dispatch(Record(tag="waits"))
    seen = board.live_workers()[0].last_seen
    wait_for(lambda: board.live_workers()[0].last_seen >= seen + 1.5, what="beats while paused")
    assert board.e2e.marks(job.job_id) == [] and board.e2e.queue_depth() == 1

    queue_row(page, "default").get_by_test_id("continue").click()
    expect(queue_row(page, "default").get_by_test_id("pause")).to_be_visible()
    board.e2e.wait_mark(job.job_id, "end")
    assert board.e2e.events(job.job_id) == [("start", 1), ("end", 1)]
