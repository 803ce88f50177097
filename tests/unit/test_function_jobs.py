"""`@job` (issue 16): a typed function as a job, run by the same core as a `Job` class.

The function jobs live at module level, as they would in a user's SQSJOBS_APP module: the process
executor's children import this module by name and find them registered.
"""

from __future__ import annotations

import asyncio
import functools
import json
import typing
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import sqsjobs
from lambda_handlers.sqs import SqsHandler
from sqsjobs import App, ConfigurationError, FunctionJob, Job, RateLimited, SqsJobsError, chain, current_job, job
from sqsjobs.executors import ProcessExecutor
from sqsjobs.job_class import JobContext
from sqsjobs.testing.fake import fake
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dead_letters, queue_url
from tests.lambda_events import deliver, failed_ids, receive_event

#: (function, payload, attempts, job id) per run, in order.
ran: list[tuple[str, Any, int, str | None]] = []


def note(what: str, payload: Any) -> None:
    running = current_job()
    ran.append((what, payload, running.attempts, running.job_id))


@job(queue="high", tries=5, backoff=[10, 60], timeout=30)
def send_welcome(user_id: int, template: str = "welcome") -> str:
    note("send_welcome", (user_id, template))
    return f"{template} for {user_id}"


@job(name="fn.flaky", tries=3, backoff=0)
def flaky(n: int) -> None:
    """Fails on its first run, then succeeds."""
    note("flaky", n)
    if current_job().attempts == 1:
        raise ConnectionError("the mail server hung up")


@job(name="fn.broken", tries=2, backoff=0, failed=lambda j, exc: ran.append(("failed", j.n, 0, str(exc))))
def broken(n: int) -> None:
    note("broken", n)
    raise ValueError(f"no invoice {n}")


@job(name="fn.polite", tries=3, backoff=0)
def polite(n: int) -> None:
    """Releases itself once (a try spent), then gives itself up with a reason."""
    note("polite", n)
    if current_job().attempts == 1:
        current_job().release(0)
    else:
        current_job().fail("the customer is gone")


@job(name="fn.step")
def step(n: int, /, label: str = "") -> None:  # a positional-only parameter is fine too
    note("step", (n, label))


@job(name="fn.notify")
async def notify(channel: str) -> str:
    await asyncio.sleep(0.05)  # concurrent runs interleave here: each must still see its own job
    note("notify", channel)
    return channel


@job(name="fn.write-file")
def write_file(path: str, text: str) -> None:
    """For the process executor: a child writes what it knows about its run."""
    running = current_job()
    Path(path).write_text(json.dumps({"text": text, "attempts": running.attempts, "job_id": running.job_id}))
    if text == "release":
        running.release(5)


@pytest.fixture(autouse=True)
def _reset() -> None:
    ran.clear()


def work(app: App) -> None:
    options = WorkerOptions(sleep=1, stop_when_empty=True, max_time=30, queues=["high", "default"])
    assert Worker(app, options).run(install_signals=False) == 0


@pytest.fixture
def table_app(moto: None, prefix: str) -> Iterator[App]:
    """SQS queues and the DynamoDB table (chains keep their markers there), as production has them."""
    from sqsjobs.provisioning import provision

    app = App(connection="sqs", queue_prefix=prefix, queues=["default", "high"], table=f"{prefix}table")
    provision(app, ["default", "high"], bucket=False)
    with app.activate():
        yield app


# -- dispatching and running through the core ------------------------------------------------------
def test_dispatch_on_the_sync_connection_runs_it_with_its_defaults_and_its_context() -> None:
    with App(connection="sync").activate():
        sent = send_welcome.dispatch(user_id=7)
        send_welcome.dispatch(8, template="reminder")
    assert (sent.job, sent.queue, sent.queued) == ("send_welcome", "high", True)
    assert ran == [
        ("send_welcome", (7, "welcome"), 1, sent.job_id),
        ("send_welcome", (8, "reminder"), 1, ran[1][3]),
    ]


def test_calling_it_just_calls_the_function_with_a_job_that_is_not_running() -> None:
    with fake() as dispatched:
        assert send_welcome(7) == "welcome for 7"
        assert asyncio.run(notify("ops")) == "ops"
    dispatched.assert_nothing_dispatched()
    assert ran == [("send_welcome", (7, "welcome"), 0, None), ("notify", "ops", 0, None)]
    with pytest.raises(SqsJobsError, match=r"current_job\(\) is called outside a function job"):
        current_job()


def test_the_options_become_the_job_class_a_worker_reads() -> None:
    cls = send_welcome.job_class
    assert issubclass(cls, Job) and cls.job_name == "send_welcome"
    assert (cls.queue, cls.tries, cls.backoff, cls.timeout) == ("high", 5, [10, 60], 30)
    assert [cls(user_id=1).backoff_for(a) for a in (1, 2, 3)] == [10, 60, 60]
    assert sqsjobs.default_registry.get("send_welcome") is cls
    assert sqsjobs.job is job and isinstance(send_welcome, FunctionJob)

    @job(name="fn.options", fail_on=KeyError, backoff=lambda attempt: attempt * 7, middleware=[RateLimited("x")])
    def options(n: int) -> None: ...

    made = options.make(n=1)
    assert options.job_class.fail_on == (KeyError,) and made.backoff_for(3) == 21
    assert [type(m) for m in made.middleware()] == [RateLimited]


def test_every_job_class_option_is_a_typed_keyword_of_the_decorator() -> None:
    """A new ClassVar on Job must reach @job's signature, or mypy users could not pass it."""
    keywords = set(inspect_overload_keywords())
    class_options = set(Job.__class_vars__) - {"job_name", "job_aliases"}
    assert class_options <= keywords
    assert {"name", "aliases", "middleware", "unique_id", "idempotency_key", "job_tags", "failed"} <= keywords


def inspect_overload_keywords() -> list[str]:
    import inspect

    (_, with_options) = typing.get_overloads(job)
    return list(inspect.signature(with_options).parameters)


def test_dispatch_many_takes_keyword_mappings_or_made_jobs() -> None:
    app = App(connection="memory", store="memory")
    with app.activate():
        sent = send_welcome.dispatch_many([{"user_id": 1}, send_welcome.make(2, "reminder")], queue="default")
        with pytest.raises(TypeError, match="takes mappings of keyword arguments or make"):
            send_welcome.dispatch_many([(3,)])  # type: ignore[list-item]
        with pytest.raises(TypeError, match=r"got a fn\.flaky job"):
            send_welcome.dispatch_many([flaky.make(n=1)])
    bodies = [json.loads(m.body) for m in app.connection.receive("default", 10, 0)]
    assert [(b["job"], b["payload"]) for b in bodies] == [
        ("send_welcome", {"user_id": 1, "template": "welcome"}),
        ("send_welcome", {"user_id": 2, "template": "reminder"}),
    ]
    assert [s.queue for s in sent] == ["default", "default"]


def test_a_function_job_waits_for_the_commit_like_a_class_unless_it_says_after_commit_false() -> None:
    app = App(connection="memory", store="memory")
    with app.activate(), sqsjobs.hold_dispatches():
        send_welcome.dispatch(user_id=1)
        send_welcome.dispatch_many([{"user_id": 2}])
        send_welcome.dispatch(user_id=3, after_commit=False)
        assert [json.loads(m.body)["payload"]["user_id"] for m in app.connection.receive("high", 10, 0)] == [3]
    held = [json.loads(m.body)["payload"]["user_id"] for m in app.connection.receive("high", 10, 0)]
    assert sorted(held) == [1, 2]


def test_arguments_are_validated_on_dispatch_and_nothing_is_sent() -> None:
    app = App(connection="memory", store="memory")
    with app.activate():
        with pytest.raises(ValidationError, match="user_id"):
            send_welcome.dispatch(user_id="seven")
        with pytest.raises(TypeError, match="send_welcome: missing a required argument: 'user_id'"):
            send_welcome.dispatch(template="x")
        with pytest.raises(TypeError, match="send_welcome: got an unexpected keyword argument 'usr_id'"):
            send_welcome.dispatch(7, usr_id=7)
        assert send_welcome.make(user_id="7") == send_welcome.job_class(user_id=7)  # coerced as a class field is
    assert app.connection.receive("high", 10, 0) == []


class Person(BaseModel):
    name: str
    born: date


@job(name="fn.greet")
def greet(person: Person, at: datetime, tags: list[str] | None = None) -> None:
    note("greet", (person, at, tags))


def test_rich_parameters_travel_as_json_and_arrive_as_their_types() -> None:
    at = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    with App(connection="sync").activate():
        greet.dispatch(person={"name": "Ada", "born": "1815-12-10"}, at=at.isoformat())
    ((_, (person, when, tags), _, _),) = ran
    assert (person, when, tags) == (Person(name="Ada", born=date(1815, 12, 10)), at, None)


def test_an_async_function_runs_as_an_async_job() -> None:
    with App(connection="sync").activate():
        sent = notify.dispatch(channel="ops")
    assert ran == [("notify", "ops", 1, sent.job_id)]


def test_concurrent_async_function_jobs_each_see_their_own_job_on_the_event_loop_worker() -> None:
    app = App(connection="memory", store="memory")
    with app.activate():
        sent = {notify.dispatch(channel=c).job_id: c for c in ("a", "b", "c")}
        options = WorkerOptions(sleep=1, concurrency=3, event_loop=True, stop_when_empty=True, max_time=30)
        assert Worker(app, options).run(install_signals=False) == 0
    assert sorted((job_id, channel) for _, channel, _, job_id in ran) == sorted(sent.items())


# -- on SQS (moto) with a worker ---------------------------------------------------------------------
def test_on_sqs_a_worker_retries_releases_and_gives_up_function_jobs(sqs_app: App) -> None:
    sent = send_welcome.dispatch(user_id=7)
    flaky.dispatch(n=1)
    broken.dispatch(n=2)
    polite.dispatch(n=3)
    work(sqs_app)
    runs = sorted((what, payload, attempts) for what, payload, attempts, _ in ran)
    assert runs == [
        ("broken", 2, 1),
        ("broken", 2, 2),
        ("failed", 2, 0),
        ("flaky", 1, 1),
        ("flaky", 1, 2),
        ("polite", 3, 1),
        ("polite", 3, 2),
        ("send_welcome", (7, "welcome"), 1),
    ]
    assert ("send_welcome", (7, "welcome"), 1, sent.job_id) in ran
    letters = {json.loads(m["Body"])["job"]: m["attrs"] for m in dead_letters(sqs_app, "default")}
    assert sorted(letters) == ["fn.broken", "fn.polite"]
    assert "no invoice 2" in json.dumps(letters["fn.broken"])
    assert "the customer is gone" in json.dumps(letters["fn.polite"])


def test_a_chain_of_function_jobs_runs_in_order_on_sqs(table_app: App) -> None:
    chain([step.make(1, label="a"), send_welcome.make(user_id=2), step.make(3)]).dispatch()
    work(table_app)
    assert [(what, payload) for what, payload, _, _ in ran] == [
        ("step", (1, "a")),
        ("send_welcome", (2, "welcome")),
        ("step", (3, "")),
    ]


def test_the_lambda_handler_runs_a_function_job(sqs_app: App) -> None:
    flaky.dispatch(n=5)
    event = receive_event(sqs_app, "default")
    response = deliver(SqsHandler(sqs_app), sqs_app, "default", event)
    assert failed_ids(response) == [event["Records"][0]["messageId"]]  # handed back for a retry
    assert [(w, p, a) for w, p, a, _ in ran] == [("flaky", 5, 1)]


def test_an_encrypted_function_job_carries_no_readable_payload(moto: None, prefix: str) -> None:
    from sqsjobs import aws
    from sqsjobs.provisioning import provision

    @job(name="fn.charge", encrypted=True)
    def charge(card: str) -> None:
        note("charge", card)

    key = str(aws.client("kms").create_key(Description="function jobs")["KeyMetadata"]["KeyId"])
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, kms_key=key)
    provision(app, ["default"], table=False, bucket=False)
    with app.activate():
        charge.dispatch(card="4111-1111-1111-1111")
        peeked = aws.client("sqs").receive_message(QueueUrl=queue_url(app, "default"), VisibilityTimeout=0)
        assert "4111-1111-1111-1111" not in peeked["Messages"][0]["Body"]  # whole: ciphertext is random text
        assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0
    assert [(w, p) for w, p, _, _ in ran] == [("charge", "4111-1111-1111-1111")]


# -- the process executor: a child finds the function job by importing this module ------------------
@pytest.fixture(scope="module")
def executor() -> Iterator[ProcessExecutor]:
    with ProcessExecutor(["tests.unit.test_function_jobs"], grace=0.5) as shared:
        yield shared


def test_the_process_executor_runs_a_function_job_in_a_child_with_its_context(
    executor: ProcessExecutor, tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    made = write_file.make(path=str(out), text="release")
    made._ctx = ctx = JobContext("job-7", 2, "default")
    executor.run(made, timeout=30)
    assert json.loads(out.read_text()) == {"text": "release", "attempts": 2, "job_id": "job-7"}
    assert (ctx.released, ctx.release_delay) == (True, 5), "the child's release() reaches the parent's run"


# -- the fakes ------------------------------------------------------------------------------------
def test_the_fake_takes_a_function_job_wherever_it_takes_a_job_class() -> None:
    with App(connection="memory", store="memory").activate(), fake() as dispatched:
        send_welcome.dispatch(user_id=7)
        chain([step.make(1), send_welcome.make(user_id=8)]).dispatch()
    dispatched.assert_dispatched(send_welcome, lambda j: j.user_id == 7, times=1)
    dispatched.assert_dispatched_on("high", send_welcome, lambda j: j.user_id == 7)
    dispatched.assert_not_dispatched(flaky)
    dispatched.assert_chained([step, send_welcome.make(user_id=8)])
    assert [j.user_id for j in dispatched.jobs(send_welcome)] == [7]
    with pytest.raises(AssertionError, match=r"expected send_welcome matching .* dispatched\n"):
        dispatched.assert_dispatched(send_welcome, lambda j: j.user_id == 9)


def test_fake_only_records_the_function_jobs_named() -> None:
    real = App(connection="memory", store="memory")
    with real.activate(), fake(only=[send_welcome]) as dispatched:
        send_welcome.dispatch(user_id=7)
        flaky.dispatch(n=1)
    dispatched.assert_dispatched(send_welcome)
    dispatched.assert_not_dispatched(flaky)
    assert [json.loads(m.body)["job"] for m in real.connection.receive("default", 10, 0)] == ["fn.flaky"]


# -- what the decorator refuses, at decoration ----------------------------------------------------
class Lock:
    """Not something a message can carry."""


def _star(*names: int) -> None: ...
def _double(**options: int) -> None: ...
def _bare(user_id) -> None: ...  # type: ignore[no-untyped-def]
def _shadow(attempts: int) -> None: ...
def _queue(queue: str) -> None: ...
def _group(group: str) -> None: ...
def _private(_secret: str) -> None: ...
def _unserialisable(lock: Lock) -> None: ...


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (_star, r"parameter \*names: int cannot be a payload; a job's payload is named parameters only"),
        (_double, r"parameter \*\*options: int cannot be a payload"),
        (_bare, r"parameter 'user_id' has no annotation; annotate it"),
        (_shadow, r"parameter 'attempts' would hide Job's own 'attempts'.*rename it \(e.g. attempts_\)"),
        (_queue, r"parameter 'queue' would hide"),
        (_group, r"parameter 'group' would hide .* dispatch\(\) option"),
        (_private, r"parameter '_secret' starts with _"),
        (_unserialisable, r"cannot be a payload field"),
    ],
)
def test_a_function_that_cannot_be_a_payload_is_refused_when_decorated(fn: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        job(name=f"fn.refused{fn.__name__}")(fn)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_retries": 3}, r"unknown option\(s\) max_retries \(max_retries: use tries="),
        ({"retries": 3}, r"unknown option\(s\) retries; the options are aliases, backoff"),
        ({"name": "_hidden"}, r"job name '_hidden' does not match .* @job\(name='...'\)"),
        ({"name": "fn.ok", "aliases": ["bad name"]}, r"job name 'bad name' does not match"),
        ({"unique_for": 60}, r"is unique but has parameters; pass unique_id=lambda job"),
        ({"tries": 0}, r"tries must be a whole number >= 1"),
    ],
)
def test_bad_options_are_refused_when_decorated(options: dict[str, Any], message: str) -> None:
    def fn(user_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match=message):
        job(**options)(fn)


def test_a_class_or_a_decorated_function_is_not_decorated_again() -> None:
    with pytest.raises(ConfigurationError, match="decorates a plain function"):
        job(send_welcome)
    with pytest.raises(ConfigurationError, match=r"for a class, subclass sqsjobs\.Job"):
        job(dict)  # type: ignore[arg-type]


def test_two_functions_with_one_name_are_refused() -> None:
    def first(n: int) -> None: ...
    def second(n: int) -> None: ...

    job(name="fn.clash")(first)
    with pytest.raises(ConfigurationError, match=r"job name 'fn\.clash' is used by both"):
        job(name="fn.clash")(second)


def test_a_unique_function_job_says_which_runs_are_the_same() -> None:
    @job(name="fn.unique", unique_for=timedelta(minutes=5), unique_id=lambda j: str(j.user_id))
    def sync_user(user_id: int) -> None: ...

    with App(connection="memory", store="memory").activate():
        first, again, other = sync_user.dispatch(1), sync_user.dispatch(1), sync_user.dispatch(2)
    assert (first.queued, again.queued, other.queued) == (True, False, True)


def _plain_decorator(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


@job(name="fn.wrapped-async")
@_plain_decorator
async def wrapped_async(n: int) -> None:
    await asyncio.sleep(0)
    note("wrapped_async", n)


@job(name="fn.renamed", aliases="fn.old-name")
def renamed(n: int) -> None:
    note("renamed", n)


@job(name="fn.takes-self")
def takes_self(self: int) -> None:
    note("takes_self", self)


def test_an_async_function_behind_a_plain_decorator_runs_awaited_with_its_job_current() -> None:
    with App(connection="sync").activate():
        wrapped_async.dispatch(n=4)
    assert [(w, p, a) for w, p, a, _ in ran] == [("wrapped_async", 4, 1)]  # awaited, with its job current


def test_aliases_given_as_one_string_are_one_old_name() -> None:
    assert renamed.job_class.job_aliases == ("fn.old-name",)
    assert sqsjobs.default_registry.get("fn.old-name") is renamed.job_class


def test_a_parameter_named_self_is_passed_by_keyword_everywhere() -> None:
    with App(connection="sync").activate():
        takes_self.dispatch(self=3)
    assert takes_self.make(self=5).model_dump()["self"] == 5
    takes_self(self=6)  # a plain call
    assert [(w, p) for w, p, _, _ in ran] == [("takes_self", 3), ("takes_self", 6)]
