"""Encrypted jobs (`encrypted = True`, issue 12): the payload sealed with a KMS data key, AES-256-GCM.

In-process moto (KMS, SQS, S3) through the strict rules layer; KMS calls are counted with a botocore
before-call hook on the shared client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError

from sqsjobs import App, aws, chain
from sqsjobs.connections.sqs import SqsConnection
from sqsjobs.decisions import Ack, Fail, Release
from sqsjobs.encryption import Encryptor, reveal
from sqsjobs.errors import BadMessageError, ConfigurationError
from sqsjobs.job_class import Job
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dead_letters, payload_app, queue_url

CARD = "4111-1111-1111-1111"
SIGNING = "encryption-tests-" + "k" * 32


class Charge(Job, name="encryption.charge"):
    encrypted = True
    runs: ClassVar[list[str]] = []
    card: str

    def handle(self) -> None:
        Charge.runs.append(self.card)


class Plain(Job, name="encryption.plain"):
    runs: ClassVar[list[int]] = []
    n: int

    def handle(self) -> None:
        Plain.runs.append(self.n)


@pytest.fixture(autouse=True)
def _reset() -> None:
    Charge.runs = []
    Plain.runs = []


@pytest.fixture
def kms_key(moto: None) -> str:
    return str(aws.client("kms").create_key(Description="sqsjobs tests")["KeyMetadata"]["KeyId"])


def make_app(prefix: str, **settings: Any) -> App:
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, **settings)
    provision(app, ["default"], table=False, bucket=False)
    return app


@pytest.fixture
def app(kms_key: str, prefix: str) -> Iterator[App]:
    app = make_app(prefix, kms_key=kms_key)
    with app.activate():
        yield app


def receive(app: App) -> list[Any]:
    return SqsConnection(app.settings).receive("default", 10, 0)


def process_all(app: App) -> list[Any]:
    connection = SqsConnection(app.settings)
    return [app.runner.process(m, connection) for m in connection.receive("default", 10, 0)]


def peek_bodies(app: App) -> list[str]:
    """The bodies on the queue, left there (visibility 0)."""
    found = aws.client("sqs").receive_message(
        QueueUrl=queue_url(app, "default"), MaxNumberOfMessages=10, VisibilityTimeout=0
    )
    return [m["Body"] for m in found.get("Messages", [])]


def kms_calls() -> list[str]:
    seen: list[str] = []
    aws.client("kms").meta.events.register("before-call.kms.*", lambda model, **_: seen.append(model.name))
    return seen


def send_body(app: App, body: str) -> None:
    aws.client("sqs").send_message(QueueUrl=queue_url(app, "default"), MessageBody=body)


def reasons(decisions: list[Any]) -> list[str]:
    return [d.reason if isinstance(d, Fail) else type(d).__name__ for d in decisions]


# -- the round trip ---------------------------------------------------------------------------------
def test_an_encrypted_job_runs_through_a_worker_and_its_body_never_holds_the_payload(app: App) -> None:
    Charge(card=CARD).dispatch()
    (body,) = peek_bodies(app)
    assert CARD not in body and '"card"' not in body  # the field name, quoted: never in base64 text
    wire = json.loads(body)
    assert wire["payload"] == {} and wire["job"] == "encryption.charge" and wire["id"]
    assert set(wire["encrypted"]) == {"v", "alg", "key", "iv", "ct"}
    assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0
    assert Charge.runs == [CARD]


def test_a_plain_job_makes_no_kms_client_and_no_kms_call(kms_key: str, prefix: str) -> None:
    app = make_app(prefix, kms_key=kms_key)
    seen = kms_calls()
    with app.activate():
        Plain(n=1).dispatch()
    assert reasons(process_all(app)) == ["Ack"] and Plain.runs == [1]
    assert seen == [] and app._encryptor is None


def test_an_offloaded_body_is_encrypted_in_its_s3_object(kms_key: str, prefix: str) -> None:
    app = payload_app(prefix, payload_threshold="always", kms_key=kms_key)
    with app.activate():
        Charge(card=CARD).dispatch()
    (message,) = aws.client("sqs").receive_message(QueueUrl=queue_url(app, "default"))["Messages"]
    assert "s3BucketName" in message["Body"] and CARD not in message["Body"]
    s3 = aws.client("s3")
    (obj,) = s3.list_objects_v2(Bucket=app.settings.bucket)["Contents"]
    stored = s3.get_object(Bucket=app.settings.bucket, Key=obj["Key"])["Body"].read().decode()
    assert CARD not in stored and json.loads(stored)["encrypted"]["alg"] == "A256GCM"
    aws.client("sqs").change_message_visibility(
        QueueUrl=queue_url(app, "default"), ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    assert reasons(process_all(app)) == ["Ack"] and Charge.runs == [CARD]


def test_dispatch_many_and_signing_together(kms_key: str, prefix: str) -> None:
    app = make_app(prefix, kms_key=kms_key, signing_key=SIGNING)
    with app.activate():
        Charge.dispatch_many([Charge(card=f"{CARD}-{i}") for i in range(3)])
    bodies = peek_bodies(app)
    assert len(bodies) == 3 and all(CARD not in b and '"sig":"default:' in b for b in bodies)
    assert reasons(process_all(app)) == ["Ack"] * 3
    assert sorted(Charge.runs) == [f"{CARD}-{i}" for i in range(3)]


def test_the_signature_covers_the_ciphertext(kms_key: str, prefix: str) -> None:
    app = make_app(prefix, kms_key=kms_key, signing_key=SIGNING)
    with app.activate():
        Charge(card=CARD).dispatch()
    (message,) = receive(app)
    wire = json.loads(message.body)
    other = Encryptor(kms_key).seal(b'{"card":"0000"}', b"whatever")
    wire["encrypted"] = other  # a sender without the signing key swaps in its own ciphertext
    send_body(app, json.dumps(wire))
    SqsConnection(app.settings).delete("default", [message])
    assert reasons(process_all(app)) == ["signature"] and Charge.runs == []


# -- what cannot be decrypted -----------------------------------------------------------------------
def tampered(app: App, change: Any) -> list[Any]:
    Charge(card=CARD).dispatch()
    (message,) = receive(app)
    wire = json.loads(message.body)
    change(wire)
    send_body(app, json.dumps(wire))
    SqsConnection(app.settings).delete("default", [message])
    return process_all(app)


def _flip(text: str) -> str:
    import base64

    raw = bytearray(base64.b64decode(text))
    raw[len(raw) // 2] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda w: w["encrypted"].update(ct=_flip(w["encrypted"]["ct"])), id="ciphertext"),
        pytest.param(lambda w: w["encrypted"].update(key=_flip(w["encrypted"]["key"])), id="data-key"),
        pytest.param(lambda w: w["encrypted"].update(iv=_flip(w["encrypted"]["iv"])), id="iv"),
        pytest.param(lambda w: w.update(id="another-job-id"), id="swapped-job-id"),
        pytest.param(lambda w: w["encrypted"].update(ct="not base64!"), id="not-base64"),
    ],
)
def test_a_tampered_or_moved_ciphertext_goes_to_the_dlq_as_undecryptable(app: App, change: Any) -> None:
    assert reasons(tampered(app, change)) == ["undecryptable"]
    assert Charge.runs == []
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "undecryptable"
    assert CARD not in letter["Body"]


class Other(Job, name="encryption.other"):
    encrypted = True
    card: str

    def handle(self) -> None:
        raise AssertionError("must not run")


def test_a_ciphertext_moved_to_another_job_name_is_undecryptable(app: App) -> None:
    assert reasons(tampered(app, lambda w: w.update(job="encryption.other"))) == ["undecryptable"]


def test_kms_access_denied_is_undecryptable_and_never_runs(app: App) -> None:
    Charge(card=CARD).dispatch()
    app.encryptor._opened.clear()
    refuse_kms("Decrypt", 400, "AccessDeniedException")
    assert reasons(process_all(app)) == ["undecryptable"] and Charge.runs == []


def refuse_kms(operation: str, status: int, code: str) -> None:
    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {"Error": {"Code": code, "Message": "refused by the test"}, "ResponseMetadata": {}}
        return AWSResponse("https://kms.invalid/", status, {}, None), parsed  # type: ignore[arg-type]

    aws.client("kms").meta.events.register_first(f"before-call.kms.{operation}", answer)


def test_a_passing_kms_fault_releases_the_message_and_it_runs_later(app: App) -> None:
    Charge(card=CARD).dispatch()
    worker_app = App(app.settings)  # a worker with a cold data-key cache

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://kms.us-east-1.amazonaws.com")

    aws.client("kms").meta.events.register_first("before-call.kms.Decrypt", unreachable)
    connection = SqsConnection(app.settings)
    (received,) = connection.receive("default", 10, 0)
    decision = worker_app.runner.process(received, connection)
    assert isinstance(decision, Release) and "KMS could not be reached" in decision.reason
    assert Charge.runs == []
    aws.client("kms").meta.events.unregister("before-call.kms.Decrypt", unreachable)
    aws.client("sqs").change_message_visibility(  # the release's wait, over at once
        QueueUrl=queue_url(app, "default"), ReceiptHandle=received.receipt_handle, VisibilityTimeout=0
    )
    message = connection.receive("default", 10, 0)[0]
    assert worker_app.runner.process(message, connection) == Ack() and Charge.runs == [CARD]


def test_a_kms_fault_that_does_not_pass_in_the_tries_is_undecryptable(app: App) -> None:
    Charge(card=CARD).dispatch()
    worker_app = App(app.settings.model_copy(update={"tries": 1}))

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://kms.us-east-1.amazonaws.com")

    aws.client("kms").meta.events.register_first("before-call.kms.Decrypt", unreachable)
    connection = SqsConnection(app.settings)
    decisions = [worker_app.runner.process(m, connection) for m in connection.receive("default", 10, 0)]
    assert reasons(decisions) == ["undecryptable"] and Charge.runs == []


# -- configuration ----------------------------------------------------------------------------------
def test_without_a_kms_key_an_encrypted_job_is_refused_at_dispatch(moto: None, prefix: str) -> None:
    app = make_app(prefix)
    with app.activate(), pytest.raises(ConfigurationError, match="SQSJOBS_KMS_KEY"):
        Charge(card=CARD).dispatch()
    with app.activate(), pytest.raises(ConfigurationError, match="SQSJOBS_KMS_KEY"):
        Charge.dispatch_many([Charge(card=CARD)])
    assert peek_bodies(app) == []


def test_kms_refusing_the_data_key_is_a_dispatch_error(app: App) -> None:
    from sqsjobs.errors import DispatchError

    refuse_kms("GenerateDataKey", 400, "AccessDeniedException")
    with pytest.raises(DispatchError, match="kms:GenerateDataKey") as caught:
        Charge(card=CARD).dispatch()
    assert caught.value.not_queued[0][1] == "encryption.charge"
    assert peek_bodies(app) == []


def test_the_key_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_KMS_KEY", "alias/sqsjobs")
    assert App(connection="memory").encryptor.key_id == "alias/sqsjobs"


def test_dispatch_sync_runs_inline_without_kms(moto: None) -> None:
    app = App(connection="sync")
    with app.activate():
        Charge(card=CARD).dispatch()
        Charge(card=CARD).dispatch_sync()
    assert Charge.runs == [CARD, CARD]


@pytest.mark.filterwarnings("ignore:Field name .encrypted.:UserWarning")
def test_a_payload_field_may_not_be_called_encrypted() -> None:
    with pytest.raises(ConfigurationError, match="encrypted"):

        class Bad(Job, name="encryption.bad"):
            encrypted: bool  # type: ignore[misc]

            def handle(self) -> None:
                pass


# -- data keys are cached ---------------------------------------------------------------------------
def test_one_data_key_seals_many_messages_and_one_decrypt_opens_them(app: App) -> None:
    seen = kms_calls()
    Charge.dispatch_many([Charge(card=f"{CARD}-{i}") for i in range(20)])
    assert seen == ["GenerateDataKey"]
    worker_app = App(app.settings)  # another process: its own cache
    connection = SqsConnection(app.settings)
    done = 0
    while batch := connection.receive("default", 10, 0):
        done += sum(worker_app.runner.process(m, connection) == Ack() for m in batch)
    assert done == 20 and seen == ["GenerateDataKey", "Decrypt"]


def test_a_data_key_is_replaced_after_its_messages_or_its_age() -> None:
    calls: list[str] = []

    class Kms:
        def generate_data_key(self, **_: Any) -> dict[str, bytes]:
            calls.append("GenerateDataKey")
            return {"Plaintext": bytes(32), "CiphertextBlob": b"blob-%d" % len(calls)}

    now = [0.0]
    encryptor = Encryptor("alias/k", Kms, clock=lambda: now[0], max_messages=3, max_age=60)
    blobs = [encryptor.seal(b"{}", b"aad")["key"] for _ in range(7)]
    assert len(set(blobs)) == 3 and len(calls) == 3  # 3 + 3 + 1
    now[0] = 61.0
    encryptor.seal(b"{}", b"aad")
    assert len(calls) == 4


def test_the_opening_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqsjobs import encryption

    monkeypatch.setattr(encryption, "OPEN_CACHE", 2)

    class Kms:
        def decrypt(self, CiphertextBlob: bytes, **_: Any) -> dict[str, bytes]:
            return {"Plaintext": bytes(32)}

    encryptor = Encryptor(None, Kms)
    for blob in (b"a", b"b", b"c"):
        encryptor._plain_key(blob)
    assert list(encryptor._opened) == [b"b", b"c"]


# -- chains -----------------------------------------------------------------------------------------
def test_a_chain_carries_the_links_of_encrypted_jobs_sealed(kms_key: str, prefix: str) -> None:
    app = payload_app(prefix, kms_key=kms_key)
    provision(app, ["default"], table=True, bucket=False)
    with app.activate():
        chain([Plain(n=1), Charge(card=CARD), Plain(n=2)]).dispatch()
    bodies = peek_bodies(app)
    assert len(bodies) == 1 and CARD not in bodies[0]
    wire = json.loads(bodies[0])
    assert wire["payload"] == {"n": 1} and "encrypted" not in wire  # a plain job stays plain
    sealed, plain = wire["chain"]["next"]
    assert sealed["payload"] == {} and "encrypted" in sealed and plain["payload"] == {"n": 2}
    assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0
    assert Plain.runs == [1, 2] and Charge.runs == [CARD]


# -- for operators ----------------------------------------------------------------------------------
def test_reveal_shows_a_dlq_body_in_clear_with_the_operators_credentials(app: App) -> None:
    Charge(card=CARD).dispatch()
    (body,) = peek_bodies(app)
    shown = reveal(body)
    assert shown is not None and json.loads(shown)["payload"] == {"card": CARD}
    assert reveal(json.dumps({"v": 1, "job": "x"})) is None  # not an envelope: nothing to show
    wire = json.loads(body)
    wire["id"] = "moved"
    with pytest.raises(BadMessageError, match="cannot be decrypted"):
        reveal(json.dumps(wire))


def test_a_job_given_up_unrun_is_decrypted_for_its_failed_hook(app: App) -> None:
    seen: list[str] = []

    class Hooked(Charge, name="encryption.hooked"):
        def failed(self, exc: BaseException) -> None:
            seen.append(self.card)

    Hooked(card=CARD).dispatch()
    (message,) = receive(app)
    decision = app.runner.give_up(message, "lambda_timeout", RuntimeError("does not fit"))
    assert isinstance(decision, Fail) and decision.reason == "lambda_timeout" and seen == [CARD]
