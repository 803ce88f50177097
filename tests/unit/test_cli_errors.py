"""The CLI in-process (typer's CliRunner): message content is printed as text, never as markup or terminal
escapes, and expected failures are one line with a documented exit code on every verb."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sqsjobs import App, aws
from sqsjobs.cli import cli
from sqsjobs.cli.common import EXIT_AWS, EXIT_CONFIG, clean
from sqsjobs.cli.failed import BODY_CHARS
from sqsjobs.schedules import default_schedules
from tests.helpers import dead_letters, dlq_url
from tests.unit import cli_schedules  # noqa: F401  (declares cli-nightly at collection, not in a test)

runner = CliRunner()


def invoke(*args: str) -> Result:
    return runner.invoke(cli, list(args), terminal_width=250)


@pytest.fixture(autouse=True)
def only_the_cli_schedules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `schedule` verbs run the schedules of this process's default registry, which holds every
    `schedule(...)` any module imported in this test process declared (a sample's, say): keep the one
    the verbs below name, as a CLI process that imports only `--app` would have."""
    kept = {name: item for name, item in default_schedules._by_name.items() if name == "cli-nightly"}
    monkeypatch.setattr(default_schedules, "_by_name", kept)


@pytest.fixture
def cli_env(sqs_app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", sqs_app.settings.queue_prefix)
    monkeypatch.setenv("SQSJOBS_QUEUES", "default,high")
    return sqs_app


def send_to_dlq(app: App, body: str, **attributes: str) -> str:
    response = aws.client("sqs").send_message(
        QueueUrl=dlq_url(app, "default"),
        MessageBody=body,
        MessageAttributes={f"sqsjobs.{k}": {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )
    return str(response["MessageId"])


def envelope(job: str, job_id: str = "") -> str:
    return json.dumps(
        {
            "v": 1,
            "id": job_id or str(uuid.uuid4()),
            "job": job,
            "payload": {},
            "queue": "default",
            "dispatched_at": "2026-01-01T00:00:00Z",
        }
    )


# -- what comes from a message is text ------------------------------------------------------------


def test_markup_in_a_job_name_is_printed_as_it_is_by_list_and_show(cli_env: App) -> None:
    send_to_dlq(cli_env, envelope("[/x]", "job-1"))  # a redrive copy: the name comes from the body
    send_to_dlq(
        cli_env,
        envelope("ok", "job-2"),
        job="[bold]x[/x]",
        job_id="job-2",
        reason="[red]permanent",
        error="[/] closes nothing",
        traceback="Traceback [link=http://x]\n  [/link]",
    )
    listed = invoke("failed", "list")
    assert listed.exit_code == 0, listed.output
    assert "[/x]" in listed.output
    assert "[bold]x[/x]" in listed.output
    shown = invoke("failed", "show", "job-2")
    assert shown.exit_code == 0, shown.output
    for literal in ("[bold]x[/x]", "[red]permanent", "[/] closes nothing", "[link=http://x]", "[/link]"):
        assert literal in shown.output
    shown = invoke("failed", "show", "job-1")
    assert shown.exit_code == 0, shown.output
    assert "[/x]" in shown.output


def test_terminal_escapes_in_a_message_are_shown_not_obeyed(cli_env: App) -> None:
    # SQS refuses ESC and BEL in a message, but JSON carries them escaped (`\u001b`), and the C1
    # control CSI (U+009B, an ESC [ to many terminals) is a character SQS accepts anywhere.
    send_to_dlq(
        cli_env,
        envelope("evil\x1b[2J\x1b]0;owned\x07", "job-esc"),
        error="red \x9b31malert",
        traceback="line\r over \u202eevil",
    )
    for args in (("failed", "list"), ("failed", "show", "job-esc")):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in result.output
        assert "\\x1b[2J" in result.output
    shown = invoke("failed", "show", "job-esc").output
    assert "\\x9b31malert" in shown
    assert "\r" not in shown and "\\x0d over" in shown


def test_show_of_a_huge_junk_body_is_bounded_and_escaped(cli_env: App) -> None:
    rng = random.Random(3)
    alphabet = "[]/{}\\\"'<>ab\x9b\x7f\u202e\u00e9\u4e2d\U0001f600 \n\t"
    junk = "".join(rng.choice(alphabet) for _ in range(300_000))
    message_id = send_to_dlq(cli_env, junk)
    deep_id = send_to_dlq(cli_env, "[" * 300_000)  # json.loads gives up with RecursionError

    listed = invoke("failed", "list")
    assert listed.exit_code == 0, listed.output
    assert message_id in listed.output and deep_id in listed.output

    for shown_id in (message_id, deep_id):
        shown = invoke("failed", "show", shown_id)
        assert shown.exit_code == 0, shown.output
        assert len(shown.output) < BODY_CHARS * 3, "a bounded view"
        assert "more characters" in shown.output
        assert "\x9b" not in shown.output and "\u202e" not in shown.output
    full = invoke("failed", "show", message_id, "--full")
    assert full.exit_code == 0, full.output
    assert len(full.output) > 300_000


def test_emoji_and_accents_are_kept(cli_env: App) -> None:
    send_to_dlq(cli_env, envelope("café-\U0001f600", "job-emoji"))
    assert "café-\U0001f600" in invoke("failed", "list").output


def test_clean_makes_control_characters_visible_and_keeps_the_rest() -> None:
    assert clean("a\x1b[31mb\x00c\x9bd\u202ee") == "a\\x1b[31mb\\x00c\\x9bd\\u202ee"
    assert clean("one\ntwo\tthree") == "one\\x0atwo\\x09three"
    assert clean("one\ntwo\tthree", multiline=True) == "one\ntwo\tthree"
    assert clean("lone \ud800 surrogate") == "lone \ufffd surrogate"
    assert clean("[/x] café \U0001f600") == "[/x] café \U0001f600"


# -- copies ------------------------------------------------------------------------------------------


def test_list_and_show_count_the_copies_of_one_job(cli_env: App) -> None:
    for _ in range(3):
        send_to_dlq(cli_env, envelope("billing.send", "dup-1"), job_id="dup-1", reason="permanent")
    listed = invoke("failed", "list")
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("dup-1") == 1
    assert "1 failed job(s)" in listed.output
    assert "copies" in listed.output
    shown = invoke("failed", "show", "dup-1")
    assert "3 copies" in shown.output
    forgot = invoke("failed", "forget", "dup-1")
    assert forgot.exit_code == 0, forgot.output
    assert dead_letters(cli_env) == []


# -- expected failures: one line, a documented code, on every verb -----------------------------------

VERBS = [
    ("work", "--stop-when-empty"),
    ("local", "--port", "0"),
    ("provision",),
    ("check",),
    ("failed", "list"),
    ("failed", "show", "x"),
    ("failed", "retry", "--all"),
    ("failed", "forget", "x"),
    ("failed", "flush", "--yes"),
    ("failed", "summary"),
    ("failed", "triage", "--dry-run"),
    ("failed", "prune", "--older-than", "1d", "--yes"),
    ("failed", "redrive", "--yes"),
    ("batches", "list"),
    ("batches", "show", "x"),
    ("batches", "prune"),
    ("keys", "rotate", "add", "--secret", "x"),
    ("monitor",),
    ("jobs", "show", "x"),
    ("jobs", "list", "--tag", "t"),
    ("jobs", "cancel", "x"),
    ("workers",),
    ("restart",),
    ("pause", "default"),
    ("continue", "default"),
    ("dashboard",),
    ("schedule", "list", "--app", "tests.unit.cli_schedules"),
    ("schedule", "run", "--once", "--app", "tests.unit.cli_schedules"),
    ("schedule", "test", "cli-nightly", "--app", "tests.unit.cli_schedules"),
    ("schema", "dump", "--output", "/dev/null"),
    ("schema", "check", "--against", "/dev/null"),
]
#: Verbs that read settings but call no AWS (they run in CI): the AWS errors below cannot happen to them.
NO_AWS = {"local", "schema"}
#: Verbs that read no settings and call no AWS, so the configuration and reachability errors below
#: cannot happen to them (they are still covered by their own tests).
OFFLINE = {("keys", "generate")}


def every_verb() -> list[tuple[str, ...]]:
    """Each verb the CLI has, as `(group, name)` or `(name,)`: the parametrized list must cover them all."""
    out: list[tuple[str, ...]] = [(info.name or "",) for info in cli.registered_commands]
    for group in cli.registered_groups:
        assert group.typer_instance is not None
        out.extend((group.name or "", info.name or "") for info in group.typer_instance.registered_commands)
    return out


def test_the_verb_list_below_covers_every_verb() -> None:
    named = {
        tuple(a for a in verb if not a.startswith("-"))[
            : 2 if verb[0] in ("failed", "batches", "keys", "jobs", "schedule", "schema") else 1
        ]
        for verb in VERBS
    }
    assert set(every_verb()) == named | OFFLINE


def one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in result.output


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_an_invalid_setting_is_one_line_naming_the_variable_on_every_verb(
    verb: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQSJOBS_LOG_LEVEL", "loud")
    one_line_error(invoke(*verb), EXIT_CONFIG, "SQSJOBS_LOG_LEVEL", "'loud'")


@pytest.mark.parametrize("verb", [v for v in VERBS if v[0] not in NO_AWS], ids=" ".join)
def test_no_credentials_is_one_line_and_exit_3_on_every_verb(
    verb: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never reached: signing fails first
    one_line_error(invoke(*verb), EXIT_AWS, "AWS_ACCESS_KEY_ID")


@pytest.mark.parametrize("verb", [v for v in VERBS if v[0] not in NO_AWS], ids=" ".join)
def test_no_region_is_one_line_and_exit_3(
    verb: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    one_line_error(invoke(*verb), EXIT_AWS, "AWS_REGION")


def test_a_syntax_error_in_the_jobs_module_is_one_line_naming_file_and_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = tmp_path / f"broken{uuid.uuid4().hex[:8]}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text("x = 1\ndef oops(:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("check", "--app", f"{package.name}.jobs")
    one_line_error(result, EXIT_CONFIG, "jobs.py:2", "syntax")


def test_a_jobs_module_that_cannot_be_imported_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_APP", "no_such_module_anywhere.jobs")
    one_line_error(invoke("failed", "list"), EXIT_CONFIG, "no_such_module_anywhere")


def test_debug_shows_the_traceback_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_LOG_LEVEL", "loud")
    for args, env in ((["--debug", "failed", "list"], {}), (["failed", "list"], {"SQSJOBS_DEBUG": "1"})):
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == EXIT_CONFIG
        assert "Traceback" in result.output and "ValidationError" in result.output
        assert result.output.rstrip().splitlines()[-1].startswith("error: ")


def test_a_busy_port_for_local_is_one_line_not_a_hang(moto: None) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke("local", "--port", str(port), "--no-provision")
    one_line_error(result, EXIT_CONFIG, f"port {port}", "in use", "--port")
