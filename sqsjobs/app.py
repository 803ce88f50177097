"""`App`: the settings, registry, connection and runner a process works with.

Most programs never build one: the first dispatch creates a default App from
the environment. Tests and scripts build their own (`App(connection="memory")`)
and make it current with `with app.activate():` or `sqsjobs.use(app)`.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from . import context
from .connections.base import Connection
from .dispatched import Dispatched
from .errors import ConfigurationError
from .events import Events
from .logs import LOGGED_KINDS, log_event
from .logs import takes as log_takes
from .registry import Registry, default_registry
from .settings import Settings, load_settings, settings_with
from .signing import SigningKeys, signing_keys

if TYPE_CHECKING:
    from .batches import Batch
    from .connections.sqs_async import AsyncSqsSender
    from .encryption import Encryptor
    from .job_class import Job
    from .job_log import JobStatus
    from .metrics import JobMetrics
    from .payloads import PayloadStore
    from .runner import Runner
    from .schedules import Schedules
    from .settling import Settler
    from .stores.base import Store
    from .triage import Rule


class App:
    """Everything a dispatch or a worker needs, built once per process.

    Parameters:
        settings: a Settings object; by default read from `SQSJOBS_*` variables.
        connection: a connection name (`sqs`, `memory`, `sync`, `null`) or object.
        registry: the job classes this app may run; by default every `Job` subclass.
        clock: seconds since the epoch; tests inject one to move time.
        triage: failure triage rules for every job, after each job's own (sqsjobs.triage).
        overrides: settings fields, e.g. `App(queue_prefix="test-")`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        connection: str | Connection | None = None,
        registry: Registry | None = None,
        clock: Callable[[], float] = time.time,
        triage: Iterable[Rule] = (),
        schedules: Schedules | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = settings_with(settings, **overrides)
        self.settings = settings
        self.registry = registry or default_registry
        self.clock = clock
        self.triage: list[Rule] = list(triage)
        self._schedules = schedules
        self.events = Events()
        self.events.listen(log_event, kinds=LOGGED_KINDS, when=log_takes)
        self._connection_arg = connection or settings.connection
        self._connection: Connection | None = None
        self._runner: Runner | None = None
        self._settler: Settler | None = None
        self._async_sender: AsyncSqsSender | None = None
        self._store: Store | None = None
        self._encryptor: Encryptor | None = None
        self._metrics: JobMetrics | None = None
        self._lock = threading.RLock()  # re-entered: the store is chosen by looking at the connection
        #: The signing keys, resolved once here (a Secrets Manager or SSM reference is fetched now).
        self.signing_key: SigningKeys | None = signing_keys(settings)

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            with self._lock:
                if self._connection is None:
                    self._connection = self._build_connection(self._connection_arg)
        return self._connection

    @property
    def store(self) -> Store:
        """Coordination state (locks, counters, markers); created on first use only, so plain
        jobs never touch DynamoDB."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    kind = self.settings.store
                    if kind == "dynamodb" or (kind == "auto" and self.connection.name == "sqs"):
                        from .stores.dynamodb import DynamoDbStore

                        self._store = DynamoDbStore(
                            self.settings.table, clock=self.clock, skew=self.settings.clock_skew
                        )
                    else:
                        from .stores.memory import MemoryStore

                        self._store = MemoryStore(self.clock, skew=self.settings.clock_skew)
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        self._store = store

    @property
    def payloads(self) -> PayloadStore | None:
        """Where bodies too large for SQS go (S3), on the sqs connection; None on the others,
        which have no size limit."""
        connection = self.connection
        if connection.name != "sqs":
            return None
        from .connections.sqs import SqsConnection

        return connection.payloads if isinstance(connection, SqsConnection) else None

    @property
    def async_sender(self) -> AsyncSqsSender:
        """The aiobotocore sender behind `dispatch_async` (needs `pip install sqsjobs[async]`)."""
        if self._async_sender is None:
            from .connections.sqs_async import AsyncSqsSender

            self._async_sender = AsyncSqsSender(self.settings)
        return self._async_sender

    @property
    def schedules(self) -> Schedules:
        """The schedules this app runs: those its modules declared with `schedule(...)` (loaded on first use)."""
        if self._schedules is None:
            from .schedules import default_schedules

            self._schedules = default_schedules
        return self._schedules

    @property
    def metrics(self) -> JobMetrics | None:
        """The collector `start_metrics` started, if any."""
        return self._metrics

    def start_metrics(self, mode: str | None = None, namespace: str | None = None) -> JobMetrics | None:
        """The job metrics a worker or the Lambda handler collects and flushes (SQSJOBS_METRICS); None
        when off. Started once: later calls return the same collector, whatever they ask."""
        with self._lock:
            if self._metrics is None:
                mode = mode or self.settings.metrics
                if mode == "off":
                    return None
                from .metrics import COUNTED_KINDS, JobMetrics, PutMetricData, print_emf

                if mode == "cloudwatch":
                    from . import aws

                    write: Any = PutMetricData(aws.client("cloudwatch"))
                else:
                    write = print_emf
                self._metrics = JobMetrics(
                    self.registry, namespace or self.settings.metrics_namespace, write, clock=self.clock
                )
                self.events.listen(self._metrics.listen, kinds=COUNTED_KINDS)
            return self._metrics

    @property
    def encryptor(self) -> Encryptor:
        """Seals and opens encrypted jobs' payloads (SQSJOBS_KMS_KEY); its KMS client is made on first use."""
        if self._encryptor is None:
            with self._lock:
                if self._encryptor is None:
                    from .encryption import Encryptor

                    self._encryptor = Encryptor(self.settings.kms_key)
        return self._encryptor

    @property
    def runner(self) -> Runner:
        """The core every way in asks, with the features wired in as hooks (order matters: a key is
        completed and a lock freed before the chain/batch bookkeeping sends what comes next)."""
        if self._runner is None:
            with self._lock:
                if self._runner is None:
                    from .hooks.idempotency import IdempotencyKeys
                    from .hooks.job_log import JobLog
                    from .hooks.scheduled import ScheduledRuns
                    from .hooks.unique import UniqueLocks
                    from .hooks.workflow import Workflows
                    from .runner import Runner
                    from .settling import SkipLedger

                    def store() -> Store:
                        return self.store

                    hooks = [
                        JobLog(self),
                        IdempotencyKeys(store, self.clock),
                        UniqueLocks(store),
                        Workflows(self),
                        # Last: a schedule's run is recorded as started once no hook held the job back.
                        ScheduledRuns(store, self.clock, lambda: self.schedules),
                    ]
                    self._runner = Runner(self, hooks, SkipLedger(store))
        return self._runner

    @property
    def settler(self) -> Settler:
        """Applies decisions to this app's connection (every way in uses it; see sqsjobs.settling)."""
        if self._settler is None:
            from .settling import Settler, SkipLedger

            self._settler = Settler(self.connection, SkipLedger(lambda: self.store), self.clock, self.signing_key)
        return self._settler

    def _build_connection(self, spec: str | Connection) -> Connection:
        if not isinstance(spec, str):
            return spec
        if spec == "sqs":
            from .connections.sqs import SqsConnection

            return SqsConnection(self.settings)
        if spec == "memory":
            from .connections.memory import MemoryConnection

            return MemoryConnection(
                visibility_timeout=self.settings.visibility_timeout,
                max_receive_count=self.settings.max_receive_count,
                clock=self.clock,
            )
        if spec == "sync":
            from .connections.inline import SyncConnection

            return SyncConnection(self.runner.process, self.settings.max_receive_count)
        if spec == "null":
            from .connections.inline import NullConnection

            return NullConnection()
        raise ConfigurationError(f"unknown connection {spec!r}; SQSJOBS_CONNECTION is one of sqs, sync, memory, null")

    def load_jobs(self) -> None:
        """Import the module named by SQSJOBS_APP so its job classes register themselves.

        This is the only import sqsjobs does by name, and the name comes from
        configuration, never from a message. A module that defines `sqsjobs_setup(app)` has it
        called with this app (event listeners, middleware defaults): a module is imported once per
        process, but every app that loads it (a worker's, a test's) is set up.
        """
        if self.settings.app:
            for module in self.settings.app.split(","):
                try:
                    loaded = importlib.import_module(module.strip())
                except ImportError as exc:
                    raise ConfigurationError(
                        f"SQSJOBS_APP={self.settings.app!r}: cannot import {module.strip()!r} ({exc}); "
                        "is it on PYTHONPATH?"
                    ) from exc
                setup = getattr(loaded, "sqsjobs_setup", None)
                if callable(setup):
                    setup(self)

    def queue_for(self, job_cls: type, queue: str | None) -> str:
        return queue or getattr(job_cls, "queue", None) or self.settings.default_queue

    # -- what jobs ask of the app they are dispatched to (sqsjobs.context.Services) -----------------
    def dispatch(self, job: Job, **options: Any) -> Dispatched:
        from .dispatching import dispatch

        return dispatch(job, app=self, **options)

    async def dispatch_async(self, job: Job, **options: Any) -> Dispatched:
        from .dispatching_async import dispatch_async

        return await dispatch_async(job, app=self, **options)

    def dispatch_many(self, jobs: Iterable[Job], **options: Any) -> list[Dispatched]:
        from .dispatching import dispatch_many

        return dispatch_many(jobs, app=self, **options)

    async def dispatch_many_async(self, jobs: Iterable[Job], **options: Any) -> list[Dispatched]:
        from .dispatching_async import dispatch_many_async

        return await dispatch_many_async(jobs, app=self, **options)

    def dispatch_sync(self, job: Job) -> None:
        """Run `job` inline through the runner core; re-raise its exception if it is given up."""
        from .connections.inline import SyncConnection
        from .decisions import Fail
        from .dispatch_plan import build_message

        connection = SyncConnection(self.runner.process, self.settings.max_receive_count)
        name, _envelope, message = build_message(self, job, inline=True)
        connection.send(name, message)
        decision = connection.last_decision
        if isinstance(decision, Fail) and decision.exception is not None:
            raise decision.exception

    def find_batch(self, batch_id: str, *, caller: Any = None) -> Batch | None:
        from .batches import find_batch

        return find_batch(batch_id, self, caller=caller)

    def job_status(self, job_id: str) -> JobStatus | None:
        """Where a job is, from the job log (SQSJOBS_JOB_LOG); None when the log has no record of it."""
        from . import job_log

        return job_log.status(self.store, job_id)

    def cancel(self, job_id: str) -> str:
        """Cancel a job that has not started: `cancelled` (acknowledged unrun when its message is
        received), else `started` or `ended`. Needs the job log on in the workers (SQSJOBS_JOB_LOG)."""
        from . import job_log

        return job_log.cancel(self.store, job_id, self.clock(), self.settings.job_log_ttl)

    @contextlib.contextmanager
    def activate(self) -> Iterator[App]:
        """Make this app current for dispatches in this context (thread- and task-local)."""
        token = context.activate(self)
        try:
            yield self
        finally:
            context.deactivate(token)


context.set_factory(App)


def use(app: App | None) -> None:
    """Make `app` the process-wide default (None: rebuild from the environment on next use)."""
    context.set_default(app)


def job_status(job_id: str) -> JobStatus | None:
    """`current_app().job_status(job_id)`: where a job is, from the job log."""
    return current_app().job_status(job_id)


def cancel(job_id: str) -> str:
    """`current_app().cancel(job_id)`: cancel a job that has not started (`cancelled`, `started`, `ended`)."""
    return current_app().cancel(job_id)


def current_app() -> App:
    """The app dispatches go to: the activated one, else the process default."""
    return cast(App, context.current())
