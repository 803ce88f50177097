"""`sqsjobs work --async`: jobs as tasks on one event loop, everything else as in the thread worker.

Receiving, FIFO lanes, heartbeats, batched deletes, limits and shutdown are the same parts the
thread worker uses; only *running* differs. The runner core still decides everything, and the loop
never waits on AWS or the store: every crossing between it and the pool wakes a thread, so a job
that needs no call is begun, awaited, finished and settled on the loop alone
(`Runner.begin_quiet`/`finish_quiet`), and its slot's next message is begun there too; what a
receive holds, the loop takes when the lanes tell it (no thread waits for messages). Anything else
crosses without waiting for an answer: a job a hook acts on (a lock, a key, a chain), a message
that cannot become a job, a plain `def handle`, a job that failed or released itself, or a
heartbeat call still carrying its message. Jobs handed to the loop before it turns share one
wake-up. Each job runs in its own copy of the loop's context, wherever it is begun and decided.

An `async def handle` past its timeout is cancelled for real: the watchdog asks the loop to cancel
its task (one timer for every job, not one per job). A plain `def handle` runs in the pool under
the same interrupt the thread worker uses, so a sync job stuck past its timeout is noticed by the
same watchdog, and the worker exits 1 instead of hanging. The watchdog (its own thread) watches
coroutine jobs too: one that blocks the loop (`time.sleep` inside `async def`) or swallows its
cancellation is still running past its timeout and the grace, and the worker exits 1 the same
way, without waiting for a loop that no longer turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable

from .. import context
from ..connections.base import Connection, ReceivedMessage
from ..decisions import Decision
from ..errors import JobTimeoutError
from ..job_class import Job
from ..runner import Run, Runner
from ..runner.tracing_span import run_span
from .apply import Applier
from .coroutine_jobs import awaited_on_loop, entered
from .daemon_pool import DaemonPool
from .lanes import Lanes
from .timeouts import TimeoutEnforcer

log = logging.getLogger("sqsjobs.worker")

#: Pool threads besides the `concurrency` sync jobs, for begins, finishes and settling that call AWS or the store.
_SPARE_THREADS = 4
#: How long the loop may take to run a callback before it counts as held by a job.
_STALLED_S = 1.0
#: How often a stopping loop looks whether the jobs it waits for have been settled.
_DRAIN_POLL_S = 0.05


class AsyncJobs:
    """One loop thread; `stuck` says which message's job ignored its timeout (never waited for)."""

    def __init__(
        self,
        runner: Runner,
        connection: Connection,
        lanes: Lanes,
        applier: Applier,
        enforcer: TimeoutEnforcer,
        concurrency: int,
        stuck: Callable[[ReceivedMessage], bool],
    ) -> None:
        self._runner = runner
        self._connection = connection
        self._lanes = lanes
        self._applier = applier
        self._enforcer = enforcer
        self._stuck = stuck
        self._thread = threading.Thread(target=self._main, name="sqsjobs-loop", daemon=True)
        # The worker's app is current in the pool's threads as on the loop: a job that dispatches
        # another sends it with the app that runs it (a thread starts with no context).
        self._pool = DaemonPool(
            concurrency + _SPARE_THREADS, "sqsjobs-pool", initializer=lambda: context.activate(runner.app)
        )
        #: True while the loop serves messages; after that it only cancels what is left (see `join`).
        self._serving = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Resolved on the loop once taking has ended (a stop, or `--max-jobs` started).
        self._fed: asyncio.Future[None] | None = None
        self._context = contextvars.Context()
        #: Coroutine jobs on the loop (asyncio keeps only weak references to tasks).
        self._tasks: set[asyncio.Task[None]] = set()
        #: Messages taken from the lanes and not yet settled, wherever they are: the loop stops only
        #: once none is left but stuck ones. `_taking` counts takes under way, so none slips between.
        self._lock = threading.Lock()
        self._busy: dict[int, ReceivedMessage] = {}
        self._taking = 0
        #: Coroutine jobs begun off the loop (each with its context), handed over before it turned: one wake-up.
        self._handoff = threading.Lock()
        self._launches: list[tuple[ReceivedMessage, Run, contextvars.Context]] = []
        self._launch_signalled = False

    def start(self) -> None:
        self._thread.start()

    def join(self, abandoned: Callable[[threading.Thread], bool]) -> None:
        """Wait for the loop, which returns by itself once only stuck jobs are left; unless a coroutine job
        ignored its timeout (`abandoned`: the watchdog holds the loop's thread) and the loop no longer turns
        (that job blocks it, or asyncio would wait for ever for its cancellation): its daemon thread is left."""
        while self._thread.is_alive():
            if abandoned(self._thread) and not (self._turns() if self._serving else self._ends()):
                log.warning("the event loop is held by a job that ignored its timeout; leaving it behind")
                return
            self._thread.join(0.2)

    def _ends(self) -> bool:
        """After serving, the loop cancels what is left: a job that takes the second cancellation lets
        it end within `_STALLED_S`; one that swallows every cancellation would hold it for ever."""
        self._thread.join(_STALLED_S)
        return not self._thread.is_alive()

    def _turns(self) -> bool:
        """Whether the loop runs a callback within `_STALLED_S`; asked only once a job was abandoned, so
        the loop's own looks (`_look_again`) need to keep no record of when they ran."""
        loop, turned = self._loop, threading.Event()
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(turned.set)
        except RuntimeError:  # closed: nothing turns it any more
            return False
        return turned.wait(_STALLED_S)

    def _main(self) -> None:
        context.activate(self._runner.app)
        try:
            asyncio.run(self._serve())
        finally:
            self._pool.shutdown()

    async def _serve(self) -> None:
        self._serving = True
        try:
            await self._serve_messages()
        finally:
            self._serving = False  # from here on the loop only cancels what is left: `join` may stop waiting

    async def _serve_messages(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._context = contextvars.copy_context()
        self._fed = fed = loop.create_future()
        self._lanes.listen(functools.partial(self._look_soon, loop))
        try:
            self._look_again()
            await fed
        finally:
            self._lanes.listen(None)
        # Stopping: running jobs finish, except those stuck past their timeout (their messages
        # return after the visibility timeout; asyncio.run cancels their tasks on the way out).
        while self._draining():
            await asyncio.sleep(_DRAIN_POLL_S)

    def _draining(self) -> bool:
        with self._lock:
            return self._taking > 0 or any(not self._stuck(message) for message in self._busy.values())

    def _look_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """The lanes' listener, on the thread that held messages or stopped the worker: the loop looks now."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: it serves nothing any more
            loop.call_soon_threadsafe(self._look, context=self._context)

    def _look(self) -> None:
        """On the loop: begin the held messages that may start, for the slots no job holds (a finished
        job takes the next message for its own slot), and end serving once taking has ended."""
        while (message := self._take()) is not None:
            self._begin_quietly(message)
        if self._lanes.done():
            assert self._fed is not None
            _resolve(self._fed)

    def _look_again(self) -> None:
        """`_look` now and every `look_again_s` while serving, as the thread worker's waiting loops do, for
        what tells nobody: a queue resumed while a message of it was held, a pool thread's take that reached
        `--max-jobs`. Re-armed even if a look raised, so one failure never ends the looking."""
        try:
            self._look()
        finally:
            assert self._fed is not None and self._loop is not None
            if not self._fed.done():
                self._loop.call_later(self._lanes.look_again_s, self._look_again, context=self._context)

    # -- in the pool (`_begin_quietly` runs on the loop; `_take` and `_settled` on both) --------
    def _take(self) -> ReceivedMessage | None:
        with self._lock:
            self._taking += 1
        message = None
        try:
            message = self._lanes.take(block=False)
        finally:
            with self._lock:
                self._taking -= 1
                if message is not None:
                    self._busy[id(message)] = message
        return message

    def _start(self, message: ReceivedMessage | None) -> None:
        """Begin `message`: a coroutine job goes to the loop, and this thread is done; any other runs,
        finishes and is settled here, and then the next message its slot allows is begun in turn."""
        while message is not None:
            ctx = self._context.copy()  # the job's own, as in `_begin_quietly`
            step = ctx.run(self._begin, message)
            if step is not None:
                self._to_loop(message, step, ctx)
                return
            message = self._take()

    def _begin_quietly(self, message: ReceivedMessage) -> None:
        """On the loop: begin `message` here if that calls nothing (`begin_quiet`): a coroutine job starts
        as a task here, a plain one runs in the pool, and one whose beginning would call AWS or the store
        is begun there from the start. The job's own copy of the loop's context holds
        its begin and its run (what a `processing` listener sets reaches its `handle()`, as on the thread
        worker) and no other job's. Only copies are ever entered off the loop; `self._context` itself is
        entered only by the loop's callbacks, which set nothing in it."""
        ctx = self._context.copy()
        try:
            step = ctx.run(self._runner.begin_quiet, message, self._connection)
            if step is None:
                self._pool.call(self._start, message)
            elif awaited_on_loop(step.job):
                self._create_task(message, step, ctx)
            else:
                decide = functools.partial(ctx.run, self._decide_here, message, step)
                self._pool.call(self._settle_then_next, message, decide)
        except BaseException:  # our bug, or a listener's or `middleware()`'s: a crash, and the slot goes on
            log.exception("could not begin message %s; it will be redelivered", message.message_id)
            self._pool.call(self._crashed_on_loop, message)

    def _to_loop(self, message: ReceivedMessage, step: Run, ctx: contextvars.Context) -> None:
        """Hand a begun coroutine job to the loop: one wake-up for every job handed over before it turns."""
        with self._handoff:
            self._launches.append((message, step, ctx))
            if self._launch_signalled:
                return
            self._launch_signalled = True
        try:
            assert self._loop is not None
            # `_launch` runs in the loop's own context (and sets nothing in it); each task runs in its job's.
            self._loop.call_soon_threadsafe(self._launch, context=self._context)
        except Exception:  # the loop is gone: only when it was never meant to wait for these messages
            with self._handoff:
                stranded, self._launches, self._launch_signalled = self._launches, [], False
            for stranded_message, _, _ in stranded:
                self._crashed(stranded_message)

    def _begin(self, message: ReceivedMessage) -> Run | None:
        """A coroutine job's step, for the loop to await; any other outcome is settled right here."""
        try:
            step = self._runner.begin(message, self._connection)
            if isinstance(step, Run) and awaited_on_loop(step.job):
                return step
            self._applier.done(message, self._decide_here(message, step))
        except BaseException:
            # Our bug, or a job's `sys.exit()`: as on the thread worker, the message returns after its
            # visibility timeout, and this thread goes on (nothing it took may be left unsettled).
            self._crashed(message)
            return None
        self._settled(message)
        return None

    def _decide_here(self, message: ReceivedMessage, step: Run | Decision) -> Decision:  # runs a Run here
        if not isinstance(step, Run):
            return step
        started = time.perf_counter()
        error: Exception | None = None
        try:
            self._run_sync(step.job, message)
        except Exception as exc:
            error = exc
        return self._runner.finish(step, error, time.perf_counter() - started)

    def _settle_then_next(self, message: ReceivedMessage, decide: Callable[[], Decision]) -> None:
        """Decide `message` here (finish it, run a job the loop began, or take what the loop decided),
        apply the decision, then begin the next message its slot allows."""
        try:
            decision = decide()
            self._applier.done(message, decision)
        except BaseException:
            self._crashed(message)
        else:
            self._settled(message)
        self._start(self._take())

    def _crashed(self, message: ReceivedMessage, logged: bool = False) -> None:
        if not logged:
            log.exception("runner crashed on message %s; it will be redelivered", message.message_id)
        try:
            self._applier.crashed(message)
        finally:
            self._settled(message)

    def _crashed_on_loop(self, message: ReceivedMessage) -> None:
        """A coroutine job (or a begin on the loop) raised what is not an Exception: a crash, settled here."""
        self._crashed(message, logged=True)
        self._start(self._take())

    def _settled(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._busy.pop(id(message), None)

    def _run_sync(self, job: Job, message: ReceivedMessage) -> None:
        # Middleware is synchronous, so a job with middleware runs it here, in the pool
        # (an `async def handle` inside it then gets a private loop and no real cancellation).
        with self._enforcer.guard_for(message)(job):
            self._runner.run_handle(job)

    # -- on the loop ------------------------------------------------------------------------
    def _launch(self) -> None:
        with self._handoff:
            launches, self._launches, self._launch_signalled = self._launches, [], False
        for message, step, ctx in launches:
            try:
                self._create_task(message, step, ctx)
            except BaseException:  # never lose the rest of the batch
                log.exception("could not start message %s; it will be redelivered", message.message_id)
                self._pool.call(self._crashed_on_loop, message)

    def _create_task(self, message: ReceivedMessage, step: Run, ctx: contextvars.Context) -> None:
        # In the job's own copy of the loop's context, the one it was begun in.
        task = asyncio.get_running_loop().create_task(self._await(message, step), context=ctx)
        self._tasks.add(task)

    def _settle_here(self, message: ReceivedMessage, step: Run, runtime_s: float) -> bool:
        """Decide, apply and follow with the slot's next message, on the loop, a quiet job that returned
        cleanly (`Runner.finish_quiet`); False for any other (the pool finishes it)."""
        try:
            decision = self._runner.finish_quiet(step, runtime_s)
            if decision is None:
                return False
            if not self._applier.done_now(message, decision):  # a heartbeat call carries it: never wait here
                self._pool.call(self._settle_then_next, message, lambda: decision)
                return True
        except BaseException:
            log.exception("could not settle message %s; it will be redelivered", message.message_id)
            self._pool.call(self._crashed_on_loop, message)
            return True
        self._settled(message)
        if (following := self._take()) is not None:
            self._begin_quietly(following)
        return True

    async def _await(self, message: ReceivedMessage, step: Run) -> None:
        """Await one coroutine job; its outcome goes back to the pool, unawaited. Its timeout is the
        watchdog's (no timer of its own): at the deadline it asks this loop to cancel the task."""
        job_name = type(step.job).job_name
        timeout = self._enforcer.timeout_of(step.job)
        task = asyncio.current_task()
        assert task is not None and self._loop is not None
        running = self._enforcer.watching(
            job_name, timeout, message, functools.partial(self._loop.call_soon_threadsafe, task.cancel)
        )
        started = time.perf_counter()
        error: Exception | None = None
        try:
            context = step.delivery.context
            span = run_span(context, job_name) if context is not None else None
            if span is None:
                await entered(step.job, context)
            else:
                with span:
                    await entered(step.job, context)
        except asyncio.CancelledError:
            if running.interrupted_at is not None and task.uncancel() == 0:
                error = JobTimeoutError(f"{job_name} ran longer than its timeout of {timeout:g}s")
            elif task.cancelling() > 0:
                return  # asyncio.run cancels a stuck job's task as it closes; its message returns by itself
            else:  # nobody cancelled this task: a cancellation from inside the job escaped `handle()`
                error = StrayCancellationError(f"{job_name} raised CancelledError without being cancelled")
        except Exception as exc:
            error = exc
        except BaseException:
            log.exception(
                "%s raised out of its task on message %s; it will be redelivered", job_name, message.message_id
            )
            self._pool.call(self._crashed_on_loop, message)
            return
        finally:
            self._enforcer.unwatch(running)
            self._tasks.discard(task)  # here rather than in a done callback: one scheduled call less per job
        runtime_s = time.perf_counter() - started
        if error is None and self._settle_here(message, step, runtime_s):
            return
        self._pool.call(self._settle_then_next, message, functools.partial(self._runner.finish, step, error, runtime_s))


class StrayCancellationError(RuntimeError):
    """`handle()` let out a CancelledError nobody asked for (an inner task's, re-raised): judged as the
    job's error, retried like any other, instead of being mistaken for the worker's own cancellation."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
