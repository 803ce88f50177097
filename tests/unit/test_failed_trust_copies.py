"""`sqsjobs failed` and what a DLQ message only claims: an id that is not the body's makes no copy of a
job; a copy that failed its signature check is not re-signed by a bulk retry; encrypted payloads are
shown decrypted when the operator may; message text never starts a line that reads like ours.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from sqsjobs import App, Job, aws
from sqsjobs.cli import cli
from sqsjobs.connections.sqs import SqsConnection
from sqsjobs.decisions import Fail
from sqsjobs.encryption import EncryptionUnavailable
from sqsjobs.errors import BadMessageError
from sqsjobs.failed_jobs import FailedJobs
from sqsjobs.failures import PREFIX
from sqsjobs.payloads import POINTER_CLASS, SIZE_ATTRIBUTE
from sqsjobs.provisioning import provision
from sqsjobs.timing import utc_iso
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dead_letters, dlq_url, drain, payload_app, queue_url

KEY = "failed-trust-copies-" + "k" * 32
CARD = "4111-1111-1111-1111"


class Flaky(Job, name="trust-copies.flaky"):
    tries = 1
    fixed: ClassVar[bool] = False
    runs: ClassVar[list[int]] = []
    n: int = 0

    def handle(self) -> None:
        Flaky.runs.append(self.n)
        if not Flaky.fixed:
            raise RuntimeError("broken")


class Secret(Job, name="trust-copies.secret"):
    encrypted = True
    tries = 1
    card: str

    def handle(self) -> None:
        raise RuntimeError("declined")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Flaky.fixed = False
    Flaky.runs = []


def invoke(*args: str) -> Any:
    """The CLI, with the `sqsjobs` logger put back afterwards (the CLI points it at the runner's streams)."""
    logger = logging.getLogger("sqsjobs")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    try:
        return CliRunner().invoke(cli, list(args), terminal_width=250)
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


@pytest.fixture
def cli_for(monkeypatch: pytest.MonkeyPatch) -> Any:
    def point(app: App, signed: bool = False) -> App:
        monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", app.settings.queue_prefix)
        monkeypatch.setenv("SQSJOBS_QUEUES", "default")
        monkeypatch.setenv("SQSJOBS_APP", __name__)
        if signed:
            monkeypatch.setenv("SQSJOBS_SIGNING_KEY", KEY)
        return app

    return point


def to_dlq(app: App, body: str, **attributes: str) -> None:
    aws.client("sqs").send_message(
        QueueUrl=dlq_url(app, "default"),
        MessageBody=body,
        MessageAttributes={PREFIX + k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )


def work(app: App) -> None:
    assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0


def sent_to(app: App, queue: str = "default") -> list[str]:
    return [m["Body"] for m in drain(queue_url(app, queue))]


# -- 1. an impostor with a real job's id ------------------------------------------------------------------


def real_and_impostor(app: App) -> tuple[str, str]:
    """A real failed job, and after it (and before it, in SQS's order) a junk body claiming its id."""
    job_id = str(Flaky(n=1).dispatch().job_id)
    work(app)
    (letter,) = dead_letters(app)
    aws.client("sqs").delete_message(QueueUrl=dlq_url(app, "default"), ReceiptHandle=letter["ReceiptHandle"])
    forged = {"job_id": job_id, "reason": "tries_exhausted", "source_queue": "default"}
    to_dlq(app, "attacker junk", failed_at="2999-01-01T00:00:00+00:00", **forged)
    to_dlq(app, letter["Body"], **{k[len(PREFIX) :]: v for k, v in letter["attrs"].items()})
    return job_id, letter["Body"]


def test_a_junk_body_claiming_a_real_jobs_id_is_no_copy_of_it(sqs_app: App) -> None:
    job_id, real_body = real_and_impostor(sqs_app)
    listed = FailedJobs(sqs_app).list()
    assert len(listed) == 2 and {j.id for j in listed} == {job_id}
    impostor = next(j for j in listed if j.body == "attacker junk")
    assert "id" in impostor.unverified and impostor.copies == 1 and impostor.claimants == 1
    found = FailedJobs(sqs_app).find(job_id)
    assert found is not None and found.body == real_body and found.verified and "id" not in found.unverified


def test_retry_of_a_claimed_id_sends_the_verified_job_and_leaves_the_impostor(sqs_app: App) -> None:
    job_id, real_body = real_and_impostor(sqs_app)
    store = FailedJobs(sqs_app)
    (done,) = store.retry([job_id])
    assert done.body == real_body and done.copies == 1
    assert store.unmatched == {job_id: 1}
    assert [m["Body"] for m in dead_letters(sqs_app)] == ["attacker junk"], "the impostor is no copy to delete"
    Flaky.fixed = True
    work(sqs_app)
    assert Flaky.runs == [1, 1]


def test_forget_of_a_claimed_id_removes_the_verified_job_only(sqs_app: App) -> None:
    job_id, _ = real_and_impostor(sqs_app)
    store = FailedJobs(sqs_app)
    assert store.forget(job_id) is True and store.unmatched == {job_id: 1}
    assert [m["Body"] for m in dead_letters(sqs_app)] == ["attacker junk"]


def test_identical_junk_bodies_with_their_own_ids_are_separate_jobs(sqs_app: App) -> None:
    to_dlq(sqs_app, "same junk", job_id="source-1", reason="malformed")
    to_dlq(sqs_app, "same junk", job_id="source-1", reason="malformed")
    to_dlq(sqs_app, "same junk", job_id="source-2", reason="malformed")
    listed = sorted((j.id, j.copies) for j in FailedJobs(sqs_app).list())
    assert listed == [("source-1", 2), ("source-2", 1)]


def pointer(bucket: str, key: str) -> str:
    return json.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}])


@pytest.mark.parametrize("verb", ["flush", "forget", "retry"])
def test_failed_verbs_delete_only_an_object_that_is_the_jobs_own(moto: None, prefix: str, verb: str) -> None:
    """A readable object inside the payload prefix, but not one `new_key` makes for the claimed job."""
    app = payload_app(prefix)
    with app.activate():
        bucket, key = app.settings.bucket, f"{app.settings.payload_prefix}reports/q3.json"
        body = json.dumps(
            {
                "v": 1,
                "id": "crafted",
                "job": Flaky.job_name,
                "payload": {},
                "queue": "default",
                "dispatched_at": utc_iso(0),
            }
        )
        aws.client("s3").put_object(Bucket=bucket, Key=key, Body=body.encode())
        aws.client("sqs").send_message(
            QueueUrl=dlq_url(app, "default"),
            MessageBody=pointer(bucket, key),
            MessageAttributes={
                SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": str(len(body))},
                PREFIX + "job_id": {"DataType": "String", "StringValue": "crafted"},
            },
        )
        store = FailedJobs(app)
        (job,) = store.list()
        assert store.body(job) == body and not job.message.payload_error, "read as ours: inside bucket and prefix"
        if verb == "flush":
            assert store.flush() == 1
        elif verb == "forget":
            assert store.forget("crafted") is True
        else:
            assert len(store.retry(["crafted"])) == 1
        assert dead_letters(app) == []
        listed = aws.client("s3").list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        assert [o["Key"] for o in listed] == [key], "not the job's own object: never deleted"


# -- 2. bulk retry and signatures that did not check out -----------------------------------------------


@pytest.fixture
def expired(moto: None, prefix: str, cli_for: Any) -> Iterator[tuple[App, str]]:
    """A signed job captured a day ago, replayed now: the max age sends it to the DLQ as expired_signature."""
    app = App(
        connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, signing_key=KEY,
        signing_max_age=300,
    )  # fmt: skip
    provision(app, ["default"], table=False, bucket=False)
    with App(app.settings, connection="sqs", clock=lambda: time.time() - 86400).activate():
        Flaky(n=100).dispatch()
    connection = SqsConnection(app.settings)
    (captured,) = connection.receive("default", 1, 0)
    connection.delete("default", [captured])
    aws.client("sqs").send_message(QueueUrl=queue_url(app, "default"), MessageBody=captured.body)
    with app.activate():
        (replayed,) = connection.receive("default", 1, 0)
        decision = app.runner.process(replayed, connection)
        assert isinstance(decision, Fail) and decision.reason == "expired_signature"
        connection.delete("default", [replayed])
        Flaky.runs = []
        cli_for(app, signed=True)
        # The runner could not decode it, so its sqsjobs.job_id is the source message id (unverified).
        (listed,) = FailedJobs(app).list()
        yield app, listed.id


def test_retry_all_refuses_an_expired_signature_and_says_why(expired: tuple[App, str]) -> None:
    app, job_id = expired
    store = FailedJobs(app)
    assert store.retry() == [] and "expired_signature" in store.refused[job_id]
    assert store.retry(queue="default") == []
    assert store.retry([job_id]) == [], "named, but not vouched for"
    result = invoke("failed", "retry", "--all")
    assert result.exit_code == 1
    assert f"Not retried: {job_id}: its reason is expired_signature" in result.output
    assert "--accept-unverified" in result.output
    assert sent_to(app) == [] and len(dead_letters(app)) == 1
    assert invoke("failed", "retry", "--all", "--accept-unverified").exit_code == 2, "only ids, one by one"


def test_retry_of_a_named_expired_job_with_accept_unverified_runs_it(expired: tuple[App, str]) -> None:
    app, job_id = expired
    result = invoke("failed", "retry", job_id, "--accept-unverified")
    assert result.exit_code == 0, result.output
    assert dead_letters(app) == []
    work(app)
    assert Flaky.runs == [100]


def test_retry_all_refuses_a_signature_copy_and_never_signs_it(moto: None, prefix: str) -> None:
    settings: dict[str, Any] = {"queue_prefix": prefix, "queues": ["default"], "visibility_timeout": 30}
    unsigned = App(connection="sqs", **settings)
    provision(unsigned, ["default"], table=False, bucket=False)
    with unsigned.activate():
        Flaky(n=7).dispatch()
    signed = App(connection="sqs", signing_key=KEY, **settings)
    with signed.activate():
        work(signed)
        assert Flaky.runs == []
        store = FailedJobs(signed)
        (listed,) = store.list()
        job_id = listed.id
        assert store.retry() == [] and "signature" in store.refused[job_id]
        (done,) = store.retry([job_id], accept_unverified=True)
        (body,) = sent_to(signed)
        assert body == done.body and "sig" not in json.loads(body), "sent as it was: never signed by a retry"


# -- 3. encrypted payloads ------------------------------------------------------------------------------


@pytest.fixture
def encrypted_failure(moto: None, prefix: str, cli_for: Any) -> tuple[App, str]:
    key = str(aws.client("kms").create_key(Description="failed show")["KeyMetadata"]["KeyId"])
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, kms_key=key)
    provision(app, ["default"], table=False, bucket=False)
    with app.activate():
        job_id = str(Secret(card=CARD).dispatch().job_id)
        work(app)
    (letter,) = dead_letters(app)
    assert CARD not in letter["Body"]
    aws.client("sqs").change_message_visibility(
        QueueUrl=dlq_url(app, "default"), ReceiptHandle=letter["ReceiptHandle"], VisibilityTimeout=0
    )
    cli_for(app)
    return app, job_id


def test_failed_show_decrypts_an_encrypted_payload_and_list_marks_it(encrypted_failure: tuple[App, str]) -> None:
    _, job_id = encrypted_failure
    listed = invoke("failed", "list")
    assert listed.exit_code == 0 and "(encrypted)" in listed.output and CARD not in listed.output
    shown = invoke("failed", "show", job_id)
    assert shown.exit_code == 0, shown.output
    assert "decrypted (signature not checked here)" in shown.output and CARD in shown.output


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        (BadMessageError("undecryptable", "AccessDeniedException"), "payload encrypted; cannot decrypt with your"),
        (EncryptionUnavailable("throttled"), "KMS unreachable; try again"),
    ],
)
def test_failed_show_says_why_it_cannot_decrypt(
    encrypted_failure: tuple[App, str], monkeypatch: pytest.MonkeyPatch, fault: Exception, said: str
) -> None:
    _, job_id = encrypted_failure

    def refuse(body: str, encryptor: Any = None) -> str:
        raise fault

    monkeypatch.setattr("sqsjobs.cli.failed.reveal", refuse)
    shown = invoke("failed", "show", job_id)
    assert shown.exit_code == 0, shown.output
    assert said in shown.output and CARD not in shown.output and "decrypted (" not in shown.output


# -- 4. no forged lines ---------------------------------------------------------------------------------


def test_message_text_never_starts_a_line_of_its_own(sqs_app: App, cli_for: Any) -> None:
    cli_for(sqs_app)
    forged_lines = "\nqueue default  failed at 2026-01-01  attempts 1\r\nunverified: - FORGED\x9b1A\x85copies FORGED"
    to_dlq(
        sqs_app,
        json.dumps({"note": "x\ny"}),
        job_id="forger",
        reason="tries_exhausted",
        source_queue="default",
        job="a\nb",
        error="boom" + forged_lines,
        error_type="E\rreason ok",
    )
    for args in (("failed", "list"), ("failed", "show", "forger")):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        assert not any(c in result.output for c in "\r\x9b\x85"), result.output
        lines = result.output.splitlines()
        assert sum(line.startswith("queue ") for line in lines) == (1 if args[1] == "show" else 0), result.output
        assert not any(line.startswith(("unverified: - FORGED", "copies FORGED", "reason ok")) for line in lines)
