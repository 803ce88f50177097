"""The strict-AWS-rules layer (sqsjobs.testing.aws_rules): each rule refuses what AWS refuses, with
AWS's error code and status, through a real boto3 client against in-process moto; its valid
neighbour passes. Rules moto already enforces are tested too, so a moto regression shows here."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from sqsjobs import aws
from sqsjobs.testing import aws_rules


@pytest.fixture
def sqs(moto: None) -> Any:
    return aws.client("sqs")


@pytest.fixture
def std(sqs: Any, prefix: str) -> str:
    return str(sqs.create_queue(QueueName=f"{prefix}std")["QueueUrl"])


@pytest.fixture
def fifo(sqs: Any, prefix: str) -> str:
    return str(sqs.create_queue(QueueName=f"{prefix}q.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"])


@pytest.fixture
def fifo_cbd(sqs: Any, prefix: str) -> str:
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    return str(sqs.create_queue(QueueName=f"{prefix}cbd.fifo", Attributes=attributes)["QueueUrl"])


def refused(call: Callable[[], Any], code: str, status: int = 400) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status), error
    return caught.value


def depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def attr(value: str = "v") -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


# -- the layer is simply there --------------------------------------------------------------------


def test_the_layer_is_active_in_an_ordinary_test_without_asking(moto: None, prefix: str) -> None:
    client = boto3.client("sqs")  # any client, not only sqsjobs' own
    url = client.create_queue(QueueName=f"{prefix}plain")["QueueUrl"]
    refused(
        lambda: client.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d"), "InvalidParameterValue"
    )
    assert aws_rules.installed()


def test_a_worker_subprocess_booted_with_strict_has_the_layer(tmp_path: Any) -> None:
    script = (
        "import sqsjobs.testing.boot\n"
        "import boto3\n"
        "from moto import mock_aws\n"
        "from botocore.exceptions import ClientError\n"
        "with mock_aws():\n"
        "    sqs = boto3.client('sqs')\n"
        "    url = sqs.create_queue(QueueName='sub')['QueueUrl']\n"
        "    try:\n"
        "        sqs.send_message(QueueUrl=url, MessageBody='x', MessageDeduplicationId='d')\n"
        "        print('ACCEPTED')\n"
        "    except ClientError as e:\n"
        "        print(e.response['Error']['Code'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQSJOBS_")}

    def run(strict: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", script],
            env={**env, "SQSJOBS_TEST_STRICT": strict},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.strip()

    assert run("1") == "InvalidParameterValue"
    assert run("0") == "ACCEPTED", "without the layer moto accepts it (which is why the layer exists)"


def test_install_is_idempotent_and_uninstall_stops_reaching_new_clients(moto: None, prefix: str) -> None:
    aws_rules.install()
    aws_rules.install()
    from botocore import handlers

    assert sum(1 for spec in handlers.BUILTIN_HANDLERS if spec[1] is aws_rules._sqs_params) == 1
    try:
        aws_rules.uninstall()
        client = boto3.session.Session().client("sqs")
        url = client.create_queue(QueueName=f"{prefix}loose")["QueueUrl"]
        client.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")  # moto lets it through
    finally:
        aws_rules.install()


# -- SQS: queue types -----------------------------------------------------------------------------


def test_deduplication_id_on_a_standard_queue_is_refused(sqs: Any, std: str) -> None:
    refused(
        lambda: sqs.send_message(QueueUrl=std, MessageBody="x", MessageDeduplicationId="d"), "InvalidParameterValue"
    )
    entries = [{"Id": "a", "MessageBody": "x"}, {"Id": "b", "MessageBody": "y", "MessageDeduplicationId": "d"}]
    refused(lambda: sqs.send_message_batch(QueueUrl=std, Entries=entries), "InvalidParameterValue")
    assert depth(sqs, std) == 0, "the whole batch is refused"
    sqs.send_message(QueueUrl=std, MessageBody="x")
    sqs.send_message(QueueUrl=std, MessageBody="x", MessageGroupId="tenant")  # fair queues: allowed


def test_fifo_rules_moto_enforces_still_hold(sqs: Any, fifo: str, fifo_cbd: str) -> None:
    send = sqs.send_message
    refused(
        lambda: send(QueueUrl=fifo, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="1", DelaySeconds=5),
        "InvalidParameterValue",
    )
    refused(lambda: send(QueueUrl=fifo, MessageBody="x", MessageDeduplicationId="2"), "MissingParameter")
    refused(lambda: send(QueueUrl=fifo, MessageBody="x", MessageGroupId="g"), "InvalidParameterValue")
    send(QueueUrl=fifo, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="3")
    send(QueueUrl=fifo_cbd, MessageBody="x", MessageGroupId="g")


def test_a_fifo_resend_within_five_minutes_is_accepted_but_not_enqueued_even_after_a_delete(
    sqs: Any, fifo: str
) -> None:
    first = sqs.send_message(QueueUrl=fifo, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="same")
    (message,) = sqs.receive_message(QueueUrl=fifo)["Messages"]
    sqs.delete_message(QueueUrl=fifo, ReceiptHandle=message["ReceiptHandle"])

    again = sqs.send_message(QueueUrl=fifo, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="same")
    assert again["MessageId"] and again["MessageId"] != first["MessageId"]
    assert again["MD5OfMessageBody"] == first["MD5OfMessageBody"]
    entries = [
        {"Id": "dup", "MessageBody": "x", "MessageGroupId": "g", "MessageDeduplicationId": "same"},
        {"Id": "new", "MessageBody": "y", "MessageGroupId": "g", "MessageDeduplicationId": "other"},
    ]
    answer = sqs.send_message_batch(QueueUrl=fifo, Entries=entries)
    assert sorted(e["Id"] for e in answer["Successful"]) == ["dup", "new"] and not answer.get("Failed")
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10)["Messages"]] == ["y"]

    aws_rules.advance_clock(301)
    sqs.send_message(QueueUrl=fifo, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="same")
    assert depth(sqs, fifo) == 2, "after the interval the same id is a new message"


def test_content_based_deduplication_uses_the_body_hash(sqs: Any, fifo_cbd: str) -> None:
    sqs.send_message(QueueUrl=fifo_cbd, MessageBody="same body", MessageGroupId="g")
    (message,) = sqs.receive_message(QueueUrl=fifo_cbd)["Messages"]
    sqs.delete_message(QueueUrl=fifo_cbd, ReceiptHandle=message["ReceiptHandle"])
    sqs.send_message(QueueUrl=fifo_cbd, MessageBody="same body", MessageGroupId="g")
    assert depth(sqs, fifo_cbd) == 0
    sqs.send_message(QueueUrl=fifo_cbd, MessageBody="another body", MessageGroupId="g")
    assert depth(sqs, fifo_cbd) == 1


# -- SQS: visibility and receive ------------------------------------------------------------------


def test_visibility_over_twelve_hours_is_refused(sqs: Any, std: str) -> None:
    sqs.send_message(QueueUrl=std, MessageBody="x")
    refused(lambda: sqs.receive_message(QueueUrl=std, VisibilityTimeout=43201), "InvalidParameterValue")
    (message,) = sqs.receive_message(QueueUrl=std, VisibilityTimeout=43200)["Messages"]
    handle = message["ReceiptHandle"]
    refused(
        lambda: sqs.change_message_visibility(QueueUrl=std, ReceiptHandle=handle, VisibilityTimeout=43201),
        "InvalidParameterValue",
    )
    # (moto itself counts the 12 hours from the *send*, to the millisecond, so 43200 is already too late there)
    sqs.change_message_visibility(QueueUrl=std, ReceiptHandle=handle, VisibilityTimeout=43190)


def test_a_change_past_twelve_hours_from_receipt_is_refused(sqs: Any, std: str) -> None:
    sqs.send_message(QueueUrl=std, MessageBody="x")
    sqs.send_message(QueueUrl=std, MessageBody="y")
    handles = [m["ReceiptHandle"] for m in sqs.receive_message(QueueUrl=std, MaxNumberOfMessages=10)["Messages"]]
    assert len(handles) == 2
    aws_rules.advance_clock(40_000)
    refused(
        lambda: sqs.change_message_visibility(QueueUrl=std, ReceiptHandle=handles[0], VisibilityTimeout=3600),
        "InvalidParameterValue",
    )
    sqs.change_message_visibility(QueueUrl=std, ReceiptHandle=handles[0], VisibilityTimeout=3000)
    answer = sqs.change_message_visibility_batch(
        QueueUrl=std,
        Entries=[
            {"Id": "late", "ReceiptHandle": handles[0], "VisibilityTimeout": 3600},
            {"Id": "ok", "ReceiptHandle": handles[1], "VisibilityTimeout": 60},
        ],
    )
    assert [e["Id"] for e in answer["Successful"]] == ["ok"]
    assert [(e["Id"], e["Code"], e["SenderFault"]) for e in answer["Failed"]] == [
        ("late", "InvalidParameterValue", True)
    ]


def test_receive_limits(sqs: Any, std: str) -> None:
    for options in ({"MaxNumberOfMessages": 11}, {"MaxNumberOfMessages": 0}, {"WaitTimeSeconds": 21}):
        refused(lambda o=options: sqs.receive_message(QueueUrl=std, **o), "InvalidParameterValue")
    sqs.receive_message(QueueUrl=std, MaxNumberOfMessages=10, WaitTimeSeconds=0)


# -- SQS: batches ---------------------------------------------------------------------------------

BATCHES = {
    "SendMessageBatch": ("send_message_batch", lambda i: {"Id": i, "MessageBody": "x"}),
    "DeleteMessageBatch": ("delete_message_batch", lambda i: {"Id": i, "ReceiptHandle": "h" + i}),
    "ChangeMessageVisibilityBatch": (
        "change_message_visibility_batch",
        lambda i: {"Id": i, "ReceiptHandle": "h" + i, "VisibilityTimeout": 1},
    ),
}


@pytest.mark.parametrize("operation", list(BATCHES))
def test_batch_shape_rules_reject_the_whole_call(sqs: Any, std: str, operation: str) -> None:
    method, entry = BATCHES[operation]
    call = getattr(sqs, method)
    too_many = refused(
        lambda: call(QueueUrl=std, Entries=[entry(str(i)) for i in range(11)]),
        "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    )
    assert type(too_many).__name__ == "TooManyEntriesInBatchRequest"
    twice = refused(
        lambda: call(QueueUrl=std, Entries=[entry("a"), entry("a")]), "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
    )
    assert type(twice).__name__ == "BatchEntryIdsNotDistinct"
    refused(lambda: call(QueueUrl=std, Entries=[]), "AWS.SimpleQueueService.EmptyBatchRequest")
    refused(lambda: call(QueueUrl=std, Entries=[entry("no spaces")]), "AWS.SimpleQueueService.InvalidBatchEntryId")
    call(QueueUrl=std, Entries=[entry(str(i)) for i in range(10)])  # ten distinct entries: a valid call


# -- SQS: message size, attributes, characters ---------------------------------------------------


def test_a_message_over_one_mib_counting_attributes_is_refused(sqs: Any, std: str) -> None:
    limit = 1_048_576
    refused(lambda: sqs.send_message(QueueUrl=std, MessageBody="x" * (limit + 1)), "InvalidParameterValue")
    body = "x" * (limit - len("name") - len("String") - 5)
    sqs.send_message(QueueUrl=std, MessageBody=body, MessageAttributes={"name": attr("12345")})
    refused(
        lambda: sqs.send_message(QueueUrl=std, MessageBody=body, MessageAttributes={"name": attr("123456")}),
        "InvalidParameterValue",
    )
    entry = {"Id": "a", "MessageBody": body, "MessageAttributes": {"name": attr("123456")}}
    refused(lambda: sqs.send_message_batch(QueueUrl=std, Entries=[entry]), "InvalidParameterValue")


def test_a_batch_over_one_mib_in_total_is_refused(sqs: Any, std: str) -> None:
    half = 524_288
    ok = [
        {"Id": "a", "MessageBody": "x" * half},
        {"Id": "b", "MessageBody": "x" * (half - 10), "MessageAttributes": {"n": attr("v")}},
    ]
    sqs.send_message_batch(QueueUrl=std, Entries=ok)
    over = [
        {"Id": "a", "MessageBody": "x" * half},
        {"Id": "b", "MessageBody": "x" * (half - 2), "MessageAttributes": {"n": attr("v")}},
    ]
    refused(lambda: sqs.send_message_batch(QueueUrl=std, Entries=over), "AWS.SimpleQueueService.BatchRequestTooLong")


def test_more_than_ten_attributes_are_refused(sqs: Any, std: str) -> None:
    sqs.send_message(QueueUrl=std, MessageBody="x", MessageAttributes={f"a{i}": attr() for i in range(10)})
    refused(
        lambda: sqs.send_message(QueueUrl=std, MessageBody="x", MessageAttributes={f"a{i}": attr() for i in range(11)}),
        "InvalidParameterValue",
    )


@pytest.mark.parametrize(
    "name", ["AWS.trace", "amazon.x", "aWs.x", "a" * 257, ".lead", "trail.", "a..b", "sp ace", "ü"]
)
def test_invalid_attribute_names_are_refused(sqs: Any, std: str, name: str) -> None:
    refused(
        lambda: sqs.send_message(QueueUrl=std, MessageBody="x", MessageAttributes={name: attr()}),
        "InvalidParameterValue",
    )


def test_valid_attribute_names_pass(sqs: Any, std: str) -> None:
    names = {"a" * 256: attr(), "sqsjobs.reason": attr(), "x-y_z.1": attr(), "awsish": attr()}
    sqs.send_message(QueueUrl=std, MessageBody="x", MessageAttributes=names)


def test_an_empty_attribute_value_is_refused(sqs: Any, std: str) -> None:
    refused(
        lambda: sqs.send_message(QueueUrl=std, MessageBody="x", MessageAttributes={"a": attr("")}),
        "InvalidParameterValue",
    )


@pytest.mark.parametrize("char", ["\x00", "\x08", "\x1f", "\ufffe", "\uffff"])
def test_characters_outside_the_sqs_set_are_refused_in_bodies_and_attribute_values(
    sqs: Any, std: str, char: str
) -> None:
    error = refused(lambda: sqs.send_message(QueueUrl=std, MessageBody=f"a{char}b"), "InvalidMessageContents")
    assert type(error).__name__ == "InvalidMessageContents"
    refused(
        lambda: sqs.send_message(QueueUrl=std, MessageBody="x", MessageAttributes={"a": attr(f"a{char}")}),
        "InvalidMessageContents",
    )
    refused(
        lambda: sqs.send_message_batch(QueueUrl=std, Entries=[{"Id": "a", "MessageBody": char}]),
        "InvalidMessageContents",
    )


def test_allowed_characters_pass(sqs: Any, std: str) -> None:
    body = "\t\n\r \ud7ff\ue000\ufffd\U00010000\U0010ffff é 😀"
    sqs.send_message(QueueUrl=std, MessageBody=body, MessageAttributes={"a": attr(body)})
    (message,) = sqs.receive_message(QueueUrl=std)["Messages"]
    assert message["Body"] == body


@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff"])
def test_a_lone_surrogate_is_refused_not_half_enqueued(sqs: Any, std: str, surrogate: str) -> None:
    """botocore sends it JSON-escaped; AWS refuses it; moto would enqueue it and then fail the call."""
    refused(lambda: sqs.send_message(QueueUrl=std, MessageBody=f"a{surrogate}"), "InvalidMessageContents")
    refused(
        lambda: sqs.send_message(QueueUrl=std, MessageBody="x", MessageAttributes={"a": attr(surrogate)}),
        "InvalidMessageContents",
    )
    assert depth(sqs, std) == 0


# -- DynamoDB (moto enforces these itself; kept so a moto regression shows) ----------------------


@pytest.fixture
def table(moto: None, prefix: str) -> Iterator[str]:
    name = f"{prefix}table"
    aws.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name


def test_dynamodb_item_over_400_kb_is_refused(table: str) -> None:
    ddb = aws.client("dynamodb")
    big = {"pk": {"S": "a"}, "v": {"S": "x" * 409_600}}
    refused(lambda: ddb.put_item(TableName=table, Item=big), "ValidationException")
    refused(
        lambda: ddb.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": big}}]),
        "ValidationException",
    )
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"S": "x" * 300_000}})
    refused(
        lambda: ddb.update_item(
            TableName=table,
            Key={"pk": {"S": "a"}},
            UpdateExpression="SET w = :w",
            ExpressionAttributeValues={":w": {"S": "x" * 200_000}},
        ),
        "ValidationException",
    )


def test_dynamodb_transaction_limits(table: str) -> None:
    ddb = aws.client("dynamodb")

    def put(i: int) -> dict[str, Any]:
        return {"Put": {"TableName": table, "Item": {"pk": {"S": str(i)}}}}

    refused(lambda: ddb.transact_write_items(TransactItems=[put(i) for i in range(101)]), "ValidationException")
    refused(lambda: ddb.transact_write_items(TransactItems=[put(1), put(1)]), "ValidationException")
    ddb.transact_write_items(TransactItems=[put(i) for i in range(100)])


# -- S3 -------------------------------------------------------------------------------------------


def test_s3_keys_over_1024_utf8_bytes_are_refused(moto: None, prefix: str) -> None:
    s3 = aws.client("s3")
    bucket = f"{prefix}bucket"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"x")
    refused(lambda: s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x"), "KeyTooLongError")
    refused(lambda: s3.put_object(Bucket=bucket, Key="é" * 513, Body=b"x"), "KeyTooLongError")  # 1026 bytes
    refused(lambda: s3.get_object(Bucket=bucket, Key="k" * 1025), "KeyTooLongError")
    s3.put_object(Bucket=bucket, Key="é" * 512, Body=b"x")
