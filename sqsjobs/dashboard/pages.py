"""The pages (GET): each reads through `reading.Reader` in the thread pool and renders its template.

Live pages (overview, queues, schedules, a job, a tag's jobs) refresh their data region every few seconds
(static/dashboard.js). The failed page does not: reading a DLQ hides its messages while it reads (SQS
has no peek), and a page doing that every few seconds would keep them from a `sqsjobs failed retry`
run at the same time; it reads when asked (its refresh button). Nor do the pages that scan the table
(batches, jobs without a tag): a bounded scan costs read units each time, so it runs when asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..job_log import ENDED
from ..workers import ago
from . import reading
from .board import Dashboard, segment
from .reading import JOB_ROWS, FailedFilters, chart_data, hours_of

__all__ = ["FailedFilters", "routes"]

Reads = Callable[[Dashboard, Request], dict[str, Any]]


def when(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


def at_ms(ms: Any) -> str:
    return when(float(ms) / 1000) if isinstance(ms, int | float) and ms else "-"


def routes(board: Dashboard) -> list[Route]:
    def page(
        fn: Callable[[Dashboard, Request], dict[str, Any]], template: str
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            context = await run_in_threadpool(fn, board, request)
            if "redirect" in context:
                return RedirectResponse(context["redirect"], 303)
            status = int(context.pop("status", 200))
            name = context.pop("template", template)
            return board.render(request, name, status=status, when=when, ago=ago, at_ms=at_ms, **context)

        return endpoint

    return [
        Route("/", page(_overview, "overview.html")),
        Route("/queues", page(_queues, "queues.html")),
        Route("/jobs", page(_jobs, "jobs.html")),
        Route("/jobs/{job_id:path}", page(_job, "job.html")),  # :path: an id may hold a (quoted) `/`
        Route("/failed", page(_failed, "failed.html")),
        Route("/failed/{job_id:path}", page(_failed_job, "failed_job.html")),
        Route("/batches", page(_batches, "batches.html")),
        Route("/schedules", page(_schedules, "schedules.html")),
    ]


def _overview(board: Dashboard, request: Request) -> dict[str, Any]:
    hours = hours_of(request.query_params.get("hours"))
    found, paused = board.reader.workers()
    charts, totals = chart_data(board.reader, hours)
    return {
        "report": board.reader.queue_report(),
        "workers": found,
        "paused": paused,
        "charts": charts,
        "totals": totals,
        "hours": hours,
        "now": board.app.clock(),
        "snapshots_on": board.app.settings.snapshots,
        "live": True,
    }


def _queues(board: Dashboard, request: Request) -> dict[str, Any]:
    found, paused = board.reader.workers()
    return {"report": board.reader.queue_report(), "paused": paused, "workers": found, "live": True}


def _jobs(board: Dashboard, request: Request) -> dict[str, Any]:
    wanted = request.query_params.get("id", "").strip()[:512]
    if wanted:  # the "find a job by id" box: a GET form cannot put the id in the path itself
        if segment(wanted) not in (".", ".."):
            return {"redirect": f"/jobs/{segment(wanted)}"}
        return {**_job_context(board, wanted), "template": "job.html"}  # a browser would resolve /jobs/..
    tag = request.query_params.get("tag", "").strip()[:128]
    log_on = board.app.settings.job_log
    if tag:
        found, whole = board.reader.jobs(tag), True
    elif log_on:
        found, whole = board.reader.recent_jobs()
    else:  # no scan for records this setup does not write: the page says how to turn the log on
        found, whole = [], True
    return {
        "tag": tag,
        "jobs": found,
        "whole": whole,
        "scan_items": reading.SCAN_ITEMS,
        "capped": bool(tag) and len(found) >= JOB_ROWS,
        "job_rows": JOB_ROWS,
        "log_on": log_on,
        "live": bool(tag),  # without a tag the list is a (bounded) scan: read when asked, not on a timer
    }


def _job(board: Dashboard, request: Request) -> dict[str, Any]:
    return _job_context(board, request.path_params["job_id"])


def _job_context(board: Dashboard, job_id: str) -> dict[str, Any]:
    found = board.reader.job(job_id)
    return {
        "job_id": job_id,
        "job": found,
        "ended": ENDED,
        "log_on": board.app.settings.job_log,
        "live": found is not None and found.status not in ENDED,
        "status": 200 if found is not None else 404,
    }


def _failed(board: Dashboard, request: Request) -> dict[str, Any]:
    filters = FailedFilters.of(request.query_params)
    view = board.reader.failed(filters)
    return {
        "filters": filters,
        "view": view,
        "queues": board.reader.queues,
        "live": False,
        "status": 400 if view.error else 200,
    }


def _failed_job(board: Dashboard, request: Request) -> dict[str, Any]:
    job_id = request.path_params["job_id"]
    found, body, note, incomplete = board.reader.failed_job(job_id)
    return {
        "job_id": job_id,
        "job": found,
        "body": body,
        "note": note,
        "incomplete": incomplete,
        "live": False,
        "status": 200 if found is not None else 404,
    }


def _batches(board: Dashboard, request: Request) -> dict[str, Any]:
    found, whole = board.reader.batches()
    return {
        "batches": found,
        "whole": whole,
        "scan_items": reading.SCAN_ITEMS,
        "batch_rows": reading.BATCH_ROWS,
        "live": False,  # a (bounded) scan of the table: read when asked, not on a timer
    }


def _schedules(board: Dashboard, request: Request) -> dict[str, Any]:
    return {"schedules": board.reader.schedules(), "live": True}
