"""Where signing keys come from: a literal, Secrets Manager or SSM (moto), one key or a JSON keyring; resolved once."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from sqsjobs import App, aws
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.decisions import Ack, Fail
from sqsjobs.envelope import decode
from sqsjobs.errors import BadMessageError, ConfigurationError
from sqsjobs.job_class import Job
from sqsjobs.signing import MIN_KEY_BYTES, SigningKeys, generate_key, parse_keyring

K1 = "k1-" + "a" * 40
K2 = "k2-" + "b" * 40


class Signed(Job, name="signing-keys.signed"):
    runs: ClassVar[list[int]] = []
    n: int = 0

    def handle(self) -> None:
        Signed.runs.append(self.n)


@pytest.fixture(autouse=True)
def _reset() -> None:
    Signed.runs = []


def run_one(app: App) -> Any:
    (message,) = app.connection.receive("default", 1, 0)
    return app.runner.process(message)


def test_a_literal_key_signs_and_verifies_with_key_id_default() -> None:
    app = App(connection="memory", signing_key=K1)
    assert app.signing_key is not None and app.signing_key.current == "default"
    with app.activate():
        Signed(n=1).dispatch()
    (message,) = app.connection.receive("default", 1, 0)
    assert json.loads(message.body)["sig"].startswith("default:")
    assert app.runner.process(message) == Ack() and Signed.runs == [1]


def test_keys_shorter_than_32_bytes_are_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"SQSJOBS_SIGNING_KEY: key 'default' is shorter than 32 bytes"):
        App(connection="memory", signing_key="s3cret")
    ring = json.dumps({"current": "k1", "k1": K1, "old": "short"})
    with pytest.raises(ConfigurationError, match=r"key 'old' is shorter"):
        App(connection="memory", signing_key=ring)
    assert len(generate_key().encode()) >= MIN_KEY_BYTES


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"k1": "' + K1 + '"}', '"current" must name one of its keys'),
        ('{"current": "k9", "k1": "' + K1 + '"}', '"current" must name one of its keys'),
        ('{"current": "k1", "k1": 5}', "must be a key id"),
        ('{"current": "k1", "k 1": "' + K1 + '"}', "must be a key id"),
        ("{not json", "not JSON"),
    ],
)
def test_a_keyring_that_does_not_fit_is_a_configuration_error(value: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match="SQSJOBS_SIGNING_KEY") as caught:
        App(connection="memory", signing_key=value)
    assert problem in str(caught.value)
    assert K1 not in str(caught.value)  # never a key in an error line


def test_a_max_age_without_a_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="SQSJOBS_SIGNING_MAX_AGE"):
        App(connection="memory", signing_max_age=300)


def test_a_json_keyring_signs_with_current_and_verifies_with_every_listed_key() -> None:
    connection = MemoryConnection()
    old = App(connection=connection, signing_key=json.dumps({"current": "k1", "k1": K1}))
    both = App(connection=connection, signing_key=json.dumps({"current": "k2", "k1": K1, "k2": K2}))
    with old.activate():
        Signed(n=1).dispatch()
    with both.activate():
        Signed(n=2).dispatch()
    bodies = [m.body for m in connection.receive("default", 10, 0)]
    assert sorted(json.loads(b)["sig"].split(":")[0] for b in bodies) == ["k1", "k2"]
    for body in bodies:
        decode(body, both.signing_key, queue="default")
    with pytest.raises(BadMessageError, match="key id 'k2'") as unknown:
        decode(next(b for b in bodies if '"k2:' in b), old.signing_key)
    assert unknown.value.kind == "signature"


def test_secrets_manager_plain_and_json_secrets_resolve_once(moto: None) -> None:
    client = aws.client("secretsmanager")
    arn = client.create_secret(Name="prod/sqsjobs-signing", SecretString=json.dumps({"current": "k1", "k1": K1}))["ARN"]
    client.create_secret(Name="plain", SecretString=K2)
    calls: list[str] = []
    client.meta.events.register("before-call.secrets-manager.GetSecretValue", lambda **_: calls.append("get"))

    app = App(connection="memory", signing_key=f"secretsmanager:{arn}")
    assert app.signing_key is not None and (app.signing_key.current, app.signing_key.kids) == ("k1", ("k1",))
    with app.activate():
        Signed(n=1).dispatch()
        Signed(n=2).dispatch()
    assert run_one(app) == Ack() and run_one(app) == Ack() and Signed.runs == [1, 2]
    assert calls == ["get"]  # once, when the App was built; never per message

    plain = App(connection="memory", signing_key="secretsmanager:plain")
    assert plain.signing_key is not None and plain.signing_key.keys == {"default": K2.encode()}


def test_ssm_secure_string_parameters_resolve(moto: None) -> None:
    aws.client("ssm").put_parameter(
        Name="/prod/sqsjobs/signing", Value=json.dumps({"current": "a", "a": K1, "b": K2}), Type="SecureString"
    )
    app = App(connection="memory", signing_key="ssm:/prod/sqsjobs/signing")
    assert app.signing_key is not None and (app.signing_key.current, app.signing_key.kids) == ("a", ("a", "b"))
    with app.activate():
        Signed(n=3).dispatch()
    assert run_one(app) == Ack() and Signed.runs == [3]


@pytest.mark.parametrize(
    ("reference", "action"),
    [("secretsmanager:missing", "secretsmanager:GetSecretValue"), ("ssm:/missing", "ssm:GetParameter")],
)
def test_a_reference_that_cannot_be_read_names_the_setting_and_what_to_check(
    moto: None, reference: str, action: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        App(connection="memory", signing_key=reference)
    message = str(caught.value)
    assert f"SQSJOBS_SIGNING_KEY={reference}" in message
    assert action in message and "kms:Decrypt" in message


def test_a_message_signed_with_another_deployments_key_goes_to_the_dlq() -> None:
    connection = MemoryConnection()
    theirs = App(connection=connection, signing_key=json.dumps({"current": "k1", "k1": K2}))
    ours = App(connection=connection, signing_key=json.dumps({"current": "k1", "k1": K1}))
    with theirs.activate():
        Signed(n=1).dispatch()
    decision = run_one(ours)
    assert isinstance(decision, Fail) and decision.reason == "signature" and Signed.runs == []


def test_keyring_parsing_is_exact() -> None:
    assert parse_keyring(K1) == ("default", {"default": K1.encode()})
    assert parse_keyring(json.dumps({"current": "b", "a": K1, "b": K2}))[0] == "b"
    keys = SigningKeys.of(b"raw")
    assert keys.current == "default" and SigningKeys.of(keys) is keys
