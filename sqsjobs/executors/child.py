"""The job process's side of the process executor, and the JSON both sides speak.

The parent hands a child a job as its registered name and JSON payload, never as a pickle or a
class path, and the child answers in JSON: whether `handle()` released or failed the job, and what
it raised as plain text. A child only looks names up in the registry its configured modules filled,
so a name from a message can never make it import anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from ..envelope import decode
from ..errors import JobTimeoutError, PermanentError
from ..job_class import Job, JobContext
from ..payload_fields import load
from ..registry import Registry, default_registry

#: Error kinds in a reply: how the parent maps them back (see `ProcessExecutor`).
KIND_ERROR, KIND_PERMANENT, KIND_TIMEOUT, KIND_UNKNOWN_JOB = "error", "permanent", "timeout", "unknown_job"
#: The longest message and traceback text a child sends back; the DLQ keeps less anyway.
MAX_TEXT = 16_000
#: How often an idle or busy child checks that its parent is still alive.
_PARENT_CHECK_S = 1.0


def encode_request(job: Job) -> bytes:
    """What a child needs to rebuild `job` and its context: plain JSON."""
    ctx = job._ctx
    return json.dumps(
        {
            "job": type(job).job_name,
            "payload": job.model_dump(mode="json"),
            "job_id": ctx.job_id if ctx else None,
            "attempts": ctx.attempts if ctx else 0,
            "queue": ctx.queue if ctx else "",
            "envelope": ctx.envelope.encode() if ctx and ctx.envelope else None,
        },
        ensure_ascii=False,
    ).encode("utf-8", "surrogatepass")


def run_request(raw: bytes, registry: Registry, app: Any = None) -> dict[str, Any]:
    """Rebuild the job by its registered name, run `handle()`, and describe what happened."""
    reply: dict[str, Any] = {"released": False, "release_delay": None, "fail_reason": None, "error": None}
    try:
        request = json.loads(raw)
        name = str(request["job"])
    except Exception as exc:
        reply["error"] = describe(exc, None)
        return reply
    try:
        cls: type[Job] = registry.get(name)  # registered names only: a miss imports nothing
    except Exception as exc:
        reply["error"] = describe(exc, None, KIND_UNKNOWN_JOB)
        return reply
    try:
        job = load(cls, request["payload"])  # as the parent built it: nested models by name too
        envelope = decode(request["envelope"]) if request.get("envelope") else None
        ctx = JobContext(str(request.get("job_id") or ""), int(request["attempts"]), str(request["queue"]), envelope)
        ctx.app = app
        job._ctx = ctx
        _state.running = True
        try:
            result = job.handle()
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
        finally:
            _state.running = False
    except BaseException as exc:  # a job's SystemExit or KeyboardInterrupt is its error, not the child's
        reply["error"] = describe(exc, cls)
        return reply
    reply.update(released=ctx.released, release_delay=ctx.release_delay, fail_reason=ctx.fail_reason)
    return reply


def describe(exc: BaseException, cls: type[Job] | None, kind: str = "") -> dict[str, str]:
    """An exception as plain text, with the kind the parent maps it to (a job's `fail_on` is known here)."""
    if not kind:
        if isinstance(exc, JobTimeoutError):
            kind = KIND_TIMEOUT
        elif isinstance(exc, PermanentError) or (cls is not None and cls.fail_on and isinstance(exc, cls.fail_on)):
            kind = KIND_PERMANENT
        else:
            kind = KIND_ERROR
    try:
        message = str(exc)
    except Exception:
        message = "(the exception could not be turned into text)"
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:
        text = ""
    return {"type": type(exc).__name__, "message": message[:MAX_TEXT], "traceback": text[-MAX_TEXT:], "kind": kind}


def main(conn: Connection, modules: Sequence[str], app_factory: Callable[[], Any] | None) -> None:
    """A child's life: import the configured job modules, say ready, then run jobs until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the worker decides
    signal.signal(signal.SIGTERM, _on_sigterm)
    _watch_parent(os.getppid())
    with contextlib.ExitStack() as stack:
        try:
            for module in modules:  # from configuration (SQSJOBS_APP), never from a message
                importlib.import_module(module)
            app = app_factory() if app_factory is not None else None
            if app is not None and hasattr(app, "activate"):
                stack.enter_context(app.activate())  # the job's own dispatches go where the worker's do
        except BaseException as exc:
            conn.send_bytes(_dumps({"ready": False, "error": describe(exc, None)}))
            return
        conn.send_bytes(_dumps({"ready": True, "pid": os.getpid()}))
        while True:
            try:
                raw = conn.recv_bytes()
            except (EOFError, OSError):
                return  # the pool let this child go
            reply = run_request(raw, default_registry, app)
            if _state.terminating:
                return  # the parent gave up on this job; nobody reads the answer
            conn.send_bytes(_dumps(reply))


class _State:
    running = False
    terminating = False


_state = _State()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """The parent's "time is up": interrupt the job so its `finally` blocks run, then exit."""
    _state.terminating = True
    if _state.running:
        raise JobTimeoutError("the job ran past its timeout; its process was told to stop")
    raise SystemExit(0)


def _watch_parent(parent: int) -> None:
    """Exit when the worker is gone, so a runaway job does not outlive it (not when it holds the GIL)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="sqsjobs-parent-watch", daemon=True).start()


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable
