"""The operator's commands against real queues: `failed list|retry|forget|flush`, `check`, `provision`."""

from __future__ import annotations

import json

from sqsjobs import aws
from tests.e2e.conftest import E2E
from tests.e2e.e2e_jobs import FailsWhileFlagged
from tests.helpers import dlq_url, queue_url


def test_failed_retry_brings_a_job_back_with_its_id_and_fresh_attempts(e2e: E2E) -> None:
    e2e.setup()
    (e2e.dir / "flag").touch()
    job = e2e.dispatch(FailsWhileFlagged())
    assert e2e.worker("--stop-when-empty").wait(30) == 0
    assert e2e.events(job.job_id) == [("start", 1), ("fail", 1)]
    assert e2e.dlq_depth() == 1

    listed = e2e.cli("failed", "list")
    assert listed.returncode == 0, listed.stderr
    assert job.job_id in listed.stdout
    assert "e2e.fails-while-flagged" in listed.stdout
    assert e2e.dlq_depth() == 1, "listing must leave the failed job where it is"

    (e2e.dir / "flag").unlink()
    retried = e2e.cli("failed", "retry", job.job_id)
    assert retried.returncode == 0, retried.stderr
    assert "Retried 1 job(s)" in retried.stdout
    assert e2e.dlq_depth() == 0
    assert e2e.queue_depth() == 1

    worker = e2e.worker("--stop-when-empty")
    assert worker.wait(30) == 0, worker.stderr()
    # Same job id (the marker file is named by it), a fresh life: attempt 1 again.
    assert e2e.events(job.job_id) == [("start", 1), ("fail", 1), ("start", 1), ("end", 1)]
    processed = [r for r in worker.log_records() if r.get("msg") == "job processed"]
    assert [(r["job_id"], r["attempt"]) for r in processed] == [(job.job_id, 1)]
    assert e2e.dlq_depth() == 0
    assert e2e.queue_depth() == 0


def test_failed_forget_and_flush_remove_failed_jobs(e2e: E2E) -> None:
    e2e.setup()
    (e2e.dir / "flag").touch()
    jobs = [e2e.dispatch(FailsWhileFlagged()).job_id for _ in range(3)]
    assert e2e.worker("--stop-when-empty").wait(30) == 0
    assert e2e.dlq_depth() == 3

    forgot = e2e.cli("failed", "forget", jobs[0])
    assert forgot.returncode == 0, forgot.stderr
    assert e2e.dlq_depth() == 2
    listed = e2e.cli("failed", "list")
    assert listed.returncode == 0, listed.stderr
    assert jobs[0] not in listed.stdout
    assert jobs[1] in listed.stdout
    assert jobs[2] in listed.stdout

    again = e2e.cli("failed", "forget", jobs[0])
    assert again.returncode == 1
    assert e2e.dlq_depth() == 2

    flushed = e2e.cli("failed", "flush", "--yes")
    assert flushed.returncode == 0, flushed.stderr
    assert "Deleted 2 failed job(s)" in flushed.stdout
    assert e2e.dlq_depth() == 0
    # Nothing was sent back to run.
    assert e2e.queue_depth() == 0
    assert [e for job_id in jobs for e in e2e.events(job_id)] == [("start", 1), ("fail", 1)] * 3


def test_check_names_a_queue_without_dlq_until_provision_fixes_it(e2e: E2E) -> None:
    sqs = aws.client("sqs")
    sqs.create_queue(QueueName=f"{e2e.prefix}default")

    before = e2e.cli("check", "--queue", "default")
    assert before.returncode == 1, before.stdout + before.stderr
    assert "no dead-letter queue" in before.stdout
    assert "default" in before.stdout

    # A worker refuses such a queue too (failed jobs would be lost), naming the fix.
    refused = e2e.worker("--stop-when-empty")
    assert refused.wait(30) == 2
    assert "no dead-letter queue" in refused.stderr()

    provisioned = e2e.cli("provision", "--queue", "default")
    assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url(e2e.app, "default"), AttributeNames=["All"])["Attributes"]
    policy = json.loads(attributes["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith(f":{e2e.prefix}default-dlq")
    assert int(policy["maxReceiveCount"]) > 3
    assert dlq_url(e2e.app, "default")

    after = e2e.cli("check", "--queue", "default")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "All queues fit" in after.stdout


def test_check_flags_a_max_receive_count_that_does_not_exceed_tries(e2e: E2E) -> None:
    e2e.setup()
    sqs = aws.client("sqs")
    url = queue_url(e2e.app, "default")
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    )
    policy["maxReceiveCount"] = 3  # the default tries is 3: the redrive would win the race
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": json.dumps(policy)})

    found = e2e.cli("check", "--queue", "default")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "maxReceiveCount 3 does not exceed" in found.stdout


def test_failed_list_and_show_print_message_content_as_text_never_markup_or_escapes(e2e: E2E) -> None:
    """A job name with `[/x]` crashed `failed list`; ESC from a JSON body would reach the terminal."""
    e2e.setup()
    sqs = aws.client("sqs")
    url = dlq_url(e2e.app, "default")
    body = json.dumps(
        {"v": 1, "id": "job-[/x]", "job": "[/x]\x1b[2Jevil", "payload": {}, "queue": "default", "dispatched_at": ""}
    )
    sqs.send_message(QueueUrl=url, MessageBody=body)
    junk = ("[/x] \x9b31m \u202e junk \U0001f600 [bold]" * 8000)[:300_000]
    junk_id = sqs.send_message(QueueUrl=url, MessageBody=junk)["MessageId"]

    listed = e2e.cli("failed", "list")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    assert "[/x]\\x1b[2Jevil" in listed.stdout
    assert "\x1b" not in listed.stdout and "\x9b" not in listed.stdout
    assert junk_id in listed.stdout

    shown = e2e.cli("failed", "show", "job-[/x]")
    assert shown.returncode == 0, shown.stderr
    assert "[/x]\\x1b[2Jevil" in shown.stdout

    junk_shown = e2e.cli("failed", "show", junk_id)
    assert junk_shown.returncode == 0, junk_shown.stderr
    assert "more characters" in junk_shown.stdout
    assert len(junk_shown.stdout) < 20_000
    assert "\x9b" not in junk_shown.stdout and "\u202e" not in junk_shown.stdout


def test_copies_of_one_failed_job_are_one_row_one_retry_and_all_removed(e2e: E2E) -> None:
    e2e.setup()
    (e2e.dir / "flag").touch()
    job = e2e.dispatch(FailsWhileFlagged())
    assert e2e.worker("--stop-when-empty").wait(30) == 0
    sqs = aws.client("sqs")
    url = dlq_url(e2e.app, "default")
    (letter,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=0)["Messages"]
    # A worker that died between the DLQ write and the delete writes the same copy again.
    sqs.send_message(QueueUrl=url, MessageBody=letter["Body"], MessageAttributes=letter["MessageAttributes"])
    assert e2e.dlq_depth() == 2

    listed = e2e.cli("failed", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count(job.job_id) == 1
    assert "1 failed job(s)" in listed.stdout
    assert "2 copies" in e2e.cli("failed", "show", job.job_id).stdout

    (e2e.dir / "flag").unlink()
    retried = e2e.cli("failed", "retry", job.job_id)
    assert retried.returncode == 0, retried.stderr
    assert "Retried 1 job(s)" in retried.stdout
    assert e2e.dlq_depth() == 0
    assert e2e.queue_depth() == 1, "sent back once"
