from __future__ import annotations

import json
import logging

import pytest

from sqsjobs import App, Job
from sqsjobs.logs import JsonFormatter, TextFormatter


class Logged(Job, name="logs.logged"):
    def handle(self) -> None:
        pass


class Broken(Job, name="logs.broken"):
    tries = 1

    def handle(self) -> None:
        raise KeyError("missing")


def test_each_job_writes_one_start_and_one_finish_line_with_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    app = App(connection="sync")
    caplog.set_level(logging.INFO, logger="sqsjobs")
    with app.activate():
        Logged().dispatch()
        Broken().dispatch()
    records = [r for r in caplog.records if r.name == "sqsjobs.jobs"]
    lines = [json.loads(JsonFormatter().format(r)) for r in records]
    assert [line["msg"] for line in lines] == ["job started", "job processed", "job started", "job failed"]
    started, done, _, failed = lines
    assert started["job"] == "logs.logged" and started["attempt"] == 1 and "wait_ms" in started
    assert started["dispatched_at"].endswith("Z") and started["job_id"] == done["job_id"]
    assert done["outcome"] == "processed" and isinstance(done["runtime_ms"], float)
    assert failed["outcome"] == "failed" and failed["error"] == "KeyError: 'missing'" and failed["level"] == "warning"
    assert "job=logs.logged" in TextFormatter().format(records[0])
