"""`sqsjobs keys generate|rotate`: the rotation procedure, and each step applied to a Secrets Manager secret (moto)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner, Result

from sqsjobs import App, aws
from sqsjobs.cli import cli
from sqsjobs.cli.common import EXIT_CONFIG
from sqsjobs.signing import MIN_KEY_BYTES

runner = CliRunner()
OLD = "old-" + "o" * 40


def invoke(*args: str) -> Result:
    return runner.invoke(cli, list(args), terminal_width=250)


def secret() -> dict[str, str]:
    return dict(json.loads(aws.client("secretsmanager").get_secret_value(SecretId="signing")["SecretString"]))


def test_generate_prints_a_usable_key_and_a_keyring() -> None:
    first, second = invoke("keys", "generate"), invoke("keys", "generate")
    assert first.exit_code == 0 and len(first.stdout.strip()) >= MIN_KEY_BYTES
    assert first.stdout != second.stdout
    ring = json.loads(invoke("keys", "generate", "--kid", "k1").stdout)
    assert ring["current"] == "k1" and len(ring["k1"]) >= MIN_KEY_BYTES
    App(connection="memory", signing_key=json.dumps(ring))  # accepted as it is


def test_rotate_without_a_step_prints_the_procedure() -> None:
    result = invoke("keys", "rotate")
    assert result.exit_code == 0
    for word in ("1. add", "2. switch", "3. wait", "4. remove", "retention", "SQSJOBS_SIGNING_MAX_AGE"):
        assert word in result.stdout


def test_rotate_applies_each_step_to_the_secret_and_never_prints_a_key(
    moto: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.client("secretsmanager").create_secret(Name="signing", SecretString=OLD)  # one plain key, as most start
    monkeypatch.setenv("SQSJOBS_SIGNING_KEY", "secretsmanager:signing")

    dry = invoke("keys", "rotate", "add")
    assert dry.exit_code == 0 and "Nothing written" in dry.stdout, dry.output
    assert aws.client("secretsmanager").get_secret_value(SecretId="signing")["SecretString"] == OLD

    added = invoke("keys", "rotate", "add", "--apply")
    assert added.exit_code == 0, added.output
    ring = secret()
    assert ring["current"] == "default" and ring["default"] == OLD and set(ring) == {"current", "default", "k1"}
    assert OLD not in added.output and ring["k1"] not in added.output
    old_app = App(connection="memory")  # a worker restarted after step 1: verifies both, signs with the old key
    assert old_app.signing_key is not None and old_app.signing_key.current == "default"

    assert invoke("keys", "rotate", "switch", "--apply").exit_code == 0
    assert secret()["current"] == "k1"
    assert App(connection="memory").signing_key.kids == ("default", "k1")  # type: ignore[union-attr]

    refused = invoke("keys", "rotate", "remove", "--kid", "k1", "--apply")
    assert refused.exit_code == EXIT_CONFIG and "is current" in refused.output

    assert invoke("keys", "rotate", "remove", "--apply").exit_code == 0
    assert set(secret()) == {"current", "k1"} and secret()["current"] == "k1"


def test_rotate_needs_a_secrets_manager_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_SIGNING_KEY", "ssm:/prod/signing")
    result = invoke("keys", "rotate", "add", "--apply")
    assert result.exit_code == EXIT_CONFIG and "Secrets Manager" in result.output
