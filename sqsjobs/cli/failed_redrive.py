"""`sqsjobs failed redrive`: move every message of the queues' DLQs back to their queues, with SQS's own redrive.

`redrive` starts one message move task per DLQ (StartMessageMoveTask, `--rate` as its
MaxNumberOfMessagesPerSecond) after asking, with the DLQ depths (`--yes` does not ask; a stdin that is
no terminal is refused, exit 2). `--status` shows each DLQ's running or last task as SQS lists it,
`--cancel` cancels the running ones. Where the endpoint has no move tasks (moto, `sqsjobs local`) it
says so on stderr and moves the messages itself (sqsjobs.redrive.move). Registered on `failed.group`
by sqsjobs.cli.failed; how it differs from `retry` is in docs/failed-jobs.md ("Redrive").
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from botocore.exceptions import ClientError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from ..redrive import MAX_RATE, NO_MOVE_TASKS, Redrivable, Unsupported, cancel, last_task, move, redrivable, start
from ..timing import utc_iso
from .common import AppOption, QueueOption, build_app, clean, console, err_console, explain, split, text

#: More messages than this get a progress bar (on stderr) while sqsjobs moves them itself.
_HANDFUL = 10

RateOption = Annotated[
    int | None,
    typer.Option(
        "--rate",
        min=1,
        max=MAX_RATE,
        help=f"At most N messages a second (SQS's MaxNumberOfMessagesPerSecond, 1-{MAX_RATE}); default: SQS's pace.",
        show_default=False,
    ),
]


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def redrive(
    app: AppOption = None,
    queue: QueueOption = None,
    rate: RateOption = None,
    status: Annotated[bool, typer.Option("--status", help="Show each DLQ's running or last redrive.")] = False,
    cancel_: Annotated[bool, typer.Option("--cancel", help="Cancel the running redrives.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; needed when stdin is not a terminal.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --status: one JSON document.")] = False,
) -> None:
    """Move every message of the DLQs back to its queue as it is, with SQS's redrive; asks first unless --yes."""
    if status and cancel_:
        _usage("--status shows the redrives and --cancel stops them; use one at a time.")
    if (status or cancel_) and rate is not None:
        _usage("--rate sets the pace of a redrive being started; it goes without --status / --cancel.")
    if as_json and not status:
        _usage("--json goes with --status.")
    the_app = build_app(app)
    targets, refused = redrivable(the_app, split(queue))
    if status:
        _status(targets, refused, as_json)
    elif cancel_:
        _cancel(targets)
    else:
        _redrive(targets, rate, yes, refused)


def _usage(message: str) -> None:
    err_console.print(message)
    raise typer.Exit(2)


def _redrive(targets: list[Redrivable], rate: int | None, yes: bool, refused: dict[str, str]) -> None:
    for name, why in refused.items():
        err_console.print(Text(f"Not redriven: {clean(name)}: {clean(why)}"), soft_wrap=True)
    todo = [t for t in targets if t.depth > 0]
    if not todo:
        console.print("Nothing to redrive: the DLQs are empty.")
        if refused:
            raise typer.Exit(1)
        return
    where = ", ".join(f"{clean(t.queue)}: {t.depth}" for t in todo)
    total = sum(t.depth for t in todo)
    if not yes:
        if not _interactive():
            err_console.print(
                Text(
                    f"Not redriving {total} DLQ message(s) ({where}) without confirmation: stdin is not a terminal; "
                    "add --yes to move them."
                ),
                soft_wrap=True,
            )
            raise typer.Exit(2)
        if not typer.confirm(f"Move {total} DLQ message(s) ({where}) back to their queues, as they are?", err=True):
            console.print("Nothing moved.")
            raise typer.Exit(1)
    failed = bool(refused)
    ours = False  # the endpoint has no move tasks: sqsjobs moves the rest itself
    for target in todo:
        if not ours:
            try:
                handle = start(target, rate)
            except Unsupported:
                ours = True
                err_console.print(Text(NO_MOVE_TASKS), soft_wrap=True)
            except ClientError as exc:
                if explain(exc) is not None:
                    raise
                err_console.print(Text(f"Not redriven: {clean(target.queue)}: SQS refused: {_error(exc)}"))
                failed = True
                continue
            else:
                console.print(
                    Text(
                        f"{clean(target.queue)}: SQS is moving about {target.depth} message(s) back "
                        f"(task {clean(handle)}); follow it with `sqsjobs failed redrive --status`."
                    ),
                    soft_wrap=True,
                )
                continue
        failed |= not _move(target, rate)
    if failed:
        raise typer.Exit(1)


def _move(target: Redrivable, rate: int | None) -> bool:
    """sqsjobs' own move of one DLQ, with a progress bar for more than a handful; False when it left some."""
    bar: Progress | None = None
    if target.depth > _HANDFUL:
        bar = Progress(
            TextColumn(f"moving {clean(target.queue)}"), BarColumn(), MofNCompleteColumn(), console=err_console
        )
        bar.start()
    task = bar.add_task("moving", total=target.depth) if bar is not None else None
    try:
        result = move(target, rate=rate, on_moved=lambda n: bar.advance(task, n) if bar and task is not None else None)
    finally:
        if bar is not None:
            bar.stop()
    console.print(Text(f"{clean(target.queue)}: moved {result.moved} message(s) back from its DLQ."))
    for message_id, why in sorted(result.refused.items()):
        err_console.print(Text(f"Not moved: {clean(target.queue)}: message {clean(message_id)}: {clean(why)}"))
    if result.doubled:
        err_console.print(
            Text(
                f"{clean(target.queue)}: {result.doubled} message(s) were sent back but are still in the DLQ too "
                "(a duplicate, never a loss: `sqsjobs failed list` shows them)"
            ),
            soft_wrap=True,
        )
    if result.stopped:
        err_console.print(Text(f"Stopped: {clean(target.queue)}: {clean(result.stopped)}; run it again."))
    return not (result.refused or result.doubled or result.stopped)


def _error(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return clean(f"{error.get('Code', '')}: {error.get('Message', '')}")


def _status(targets: list[Redrivable], refused: dict[str, str], as_json: bool) -> None:
    rows: list[dict[str, Any]] = []
    supported = True
    for target in targets:
        task: dict[str, Any] | None = None
        if supported:
            try:
                task = last_task(target)
            except Unsupported:
                supported = False
        rows.append({"queue": target.queue, "dlq_arn": target.dlq_arn, "dlq_depth": target.depth, "task": _task(task)})
    note = (
        ""
        if supported
        else "this endpoint has no ListMessageMoveTasks (moto / sqsjobs local): sqsjobs' own move runs inside "
        "`failed redrive` and leaves no task to show"
    )
    if as_json:
        document = {"queues": rows, "move_tasks": supported, "not_redrivable": refused}
        sys.stdout.write(json.dumps(document, ensure_ascii=True, indent=2) + "\n")
        sys.stdout.flush()
    else:
        table = Table(title="redrives")
        for column in ("queue", "DLQ depth", "status", "moved / to move", "rate", "started", "failure"):
            table.add_column(column, overflow="fold")
        for row in rows:
            task = row["task"] or {}
            moved = "-" if task.get("moved") is None else str(task["moved"])
            to_move = "?" if task.get("to_move") is None else str(task["to_move"])
            table.add_row(
                text(row["queue"]),
                str(row["dlq_depth"]),
                text(task.get("status") or "none"),
                f"{moved} / {to_move}" if task else "-",
                str(task.get("rate") or "-"),
                task.get("started_at") or "-",
                text(task.get("failure_reason") or ""),
            )
        console.print(table)
    if note:
        err_console.print(Text(note), soft_wrap=True)
    if refused and not as_json:
        for name, why in refused.items():
            err_console.print(Text(f"Not shown: {clean(name)}: {clean(why)}"), soft_wrap=True)


def _task(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ListMessageMoveTasksResultEntry as shown (values as SQS gave them; the start as an ISO time)."""
    if entry is None:
        return None
    started = entry.get("StartedTimestamp")
    if isinstance(started, int | float):
        started = utc_iso(started / 1000 if started > 1e11 else started)  # SQS gives epoch milliseconds
    return {
        "status": entry.get("Status"),
        "moved": entry.get("ApproximateNumberOfMessagesMoved"),
        "to_move": entry.get("ApproximateNumberOfMessagesToMove"),
        "rate": entry.get("MaxNumberOfMessagesPerSecond"),
        "started_at": started,
        "failure_reason": entry.get("FailureReason"),
        "task_handle": entry.get("TaskHandle"),
        "destination_arn": entry.get("DestinationArn"),
    }


def _cancel(targets: list[Redrivable]) -> None:
    failed = False
    for target in targets:
        try:
            task = last_task(target)
        except Unsupported:
            err_console.print(
                Text(
                    "this endpoint has no message move tasks (moto / sqsjobs local): nothing to cancel; sqsjobs' own "
                    "move runs inside `failed redrive` (Ctrl-C stops it, after the batch it is sending)"
                ),
                soft_wrap=True,
            )
            return
        if task is None or task.get("Status") != "RUNNING" or not task.get("TaskHandle"):
            last = f" (last: {task.get('Status')})" if task else ""
            console.print(Text(f"{clean(target.queue)}: no redrive running{clean(last)}."))
            continue
        try:
            moved = cancel(str(task["TaskHandle"]))
        except ClientError as exc:
            if explain(exc) is not None:
                raise
            err_console.print(Text(f"Not cancelled: {clean(target.queue)}: SQS refused: {_error(exc)}"))
            failed = True
            continue
        so_far = f"about {moved} message(s) had moved" if moved is not None else "SQS did not say how many had moved"
        console.print(Text(f"{clean(target.queue)}: redrive cancelled; {so_far}, the rest stay in the DLQ."))
    if failed:
        raise typer.Exit(1)
