"""Messages that cannot become a job go to the DLQ with their reason, once, and never stop the worker."""

from __future__ import annotations

import json
import uuid

from sqsjobs.envelope import Envelope
from sqsjobs.timing import utc_iso
from tests.e2e.conftest import E2E
from tests.e2e.e2e_jobs import Record
from tests.helpers import dead_letters

KEY = "e2e-signing-key-e2e-signing-key-32"  # >= 32 bytes, as signing requires


def envelope(job: str, payload: dict[str, object]) -> Envelope:
    return Envelope(id=str(uuid.uuid4()), job=job, payload=payload, queue="default", dispatched_at=utc_iso(0))


def test_each_kind_of_bad_message_is_dead_lettered_with_its_reason_and_good_jobs_still_run(e2e: E2E) -> None:
    app = e2e.setup(signing_key=KEY)
    key = KEY.encode()

    unknown = envelope("e2e.no-such-job", {})
    invalid = envelope(Record.job_name, {"sleep": "not a number"})
    unsigned = envelope(Record.job_name, {"tag": "unsigned"})
    tampered = envelope(Record.job_name, {"tag": "original"})
    tampered_body = json.loads(tampered.encode(key))
    tampered_body["payload"]["tag"] = "tampered"

    expected = {
        "not json": "malformed",
        unknown.encode(key): "unknown_job",
        invalid.encode(key): "invalid_payload",
        unsigned.encode(): "signature",
        json.dumps(tampered_body): "signature",
    }
    for body in expected:
        e2e.send_raw(body)
    good = e2e.dispatch(Record(tag="good"))

    worker = e2e.worker("--stop-when-empty", env=e2e.env(SQSJOBS_SIGNING_KEY=KEY))
    assert worker.wait(30) == 0, worker.stderr()

    assert e2e.events(good.job_id) == [("start", 1), ("end", 1)]
    for bad in (invalid, unsigned, tampered):
        assert e2e.marks(bad.id) == [], f"{bad.payload} must never run"
    letters = dead_letters(app)
    assert {m["Body"]: m["attrs"]["sqsjobs.reason"] for m in letters} == expected
    assert len(letters) == len(expected)
    # Judged on first receipt, never retried in a loop.
    assert {m["attrs"]["sqsjobs.attempts"] for m in letters} == {"1"}
    assert all(m["attrs"]["sqsjobs.source_queue"] == "default" for m in letters)
    assert e2e.queue_depth() == 0
