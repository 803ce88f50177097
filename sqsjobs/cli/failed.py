"""`sqsjobs failed ...`: the dead-letter queues as a failed-jobs store.

Everything printed here that came from a message (ids, names, reasons, errors, tracebacks,
bodies) goes through `common.text` / `common.safe`: never read as rich markup, control
characters shown as `\\xNN`, and bodies cut to a bounded view. A value whose `sqsjobs.*`
attribute did not check out (`FailedJob.unverified`) is marked "(unverified)". A multi-line error is
indented under its label, so no message text starts a line of its own that reads like ours.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..encryption import EncryptionUnavailable, reveal
from ..errors import BadMessageError
from ..failed_copies import CollectedFailedJob
from ..failed_jobs import FailedJobs, RetryRefused
from ..failures import PREFIX
from .common import AppOption, QueueOption, build_app, clean, console, err_console, split, text

group = typer.Typer(
    help="Inspect, retry and remove failed jobs (they live in each queue's DLQ).",
    no_args_is_help=True,
    epilog="""[bold]Examples[/]

  sqsjobs failed list
  sqsjobs failed show 6f1c...            [dim]# reason, traceback head, payload[/]
  sqsjobs failed retry 6f1c... 9a2b...   [dim]# back to their queues, attempts reset[/]
  sqsjobs failed retry --all --queue default
  sqsjobs failed retry 6f1c... --accept-unverified   [dim]# an expired_signature / signature copy you vouch for[/]
  sqsjobs failed forget 6f1c...
  sqsjobs failed flush --queue default
""",
)

#: Characters of a body `show` prints unless --full; a body may be up to 2 GiB through S3.
BODY_CHARS = 4000
BODY_LINES = 80
#: Bodies up to this size are parsed and pretty-printed as JSON; larger ones are shown as text.
_PRETTY_JSON_CHARS = 64 * 1024
_REASON_CHARS = 120


@group.command("list")
def list_(app: AppOption = None, queue: QueueOption = None) -> None:
    """List failed jobs, one row per job id: id, job, queue, when, why, DLQ copies."""
    store = FailedJobs(build_app(app), split(queue))
    jobs = store.list()
    if not jobs:
        console.print("No failed jobs.")
        _incomplete(store)
        return
    table = Table(title=f"{len(jobs)} failed job(s)")
    # Ids are copied into `show` / `retry`, so they never wrap or shorten.
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("job", "queue", "failed at", "attempts", "reason"):
        table.add_column(column, overflow="fold")
    table.add_column("copies", justify="right")
    for job in jobs:
        table.add_row(
            _field(job, "id", job.id),
            _field(job, "job", job.job).append(" (encrypted)" if job.encrypted else "", style="cyan"),
            _field(job, "queue", job.queue),
            _field(job, "failed_at", job.failed_at),
            _field(job, "attempts", str(job.attempts)),
            _field(job, "reason", _reason(job.reason, job.error)),
            str(job.copies),
        )
    console.print(table)
    if any(job.unverified for job in jobs):
        console.print(
            Text(
                "(unverified): a value from the message's sqsjobs.* attributes or body that does not check out "
                "(see `sqsjobs failed show ID`)",
                style="dim",
            )
        )
    _incomplete(store)


def _field(job: CollectedFailedJob, name: str, value: str, style: str = "") -> Text:
    """`value` as text, marked when the message's claim for `name` did not check out."""
    shown = text(value, style=style)
    if name in job.unverified:
        shown.append(" (unverified)", style="yellow")
    return shown


@group.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="The job id (or message id) from `failed list`.")],
    app: AppOption = None,
    full: Annotated[
        bool, typer.Option("--full", help=f"Print the whole body, not its first {BODY_CHARS} characters.")
    ] = False,
) -> None:
    """Show one failed job in full: reason, traceback head and payload."""
    the_app = build_app(app)
    store = FailedJobs(the_app)
    job = store.find(job_id)
    if job is None:
        err_console.print(Text(f"No failed job {clean(job_id)}."))
        _incomplete(store)
        raise typer.Exit(1)
    console.print(Text.assemble(_field(job, "job", job.job, "bold"), " ", _field(job, "id", job.id)), soft_wrap=True)
    console.print(
        Text.assemble(
            "queue ",
            _field(job, "queue", job.queue),
            "  failed at ",
            _field(job, "failed_at", job.failed_at),
            "  attempts ",
            _field(job, "attempts", str(job.attempts)),
        ),
        soft_wrap=True,
    )
    console.print(
        Text.assemble(
            "reason ",
            _field(job, "reason", job.reason, "bold red"),
            ": ",
            text(job.error_type),
            " ",
            text(job.error.replace("\n", "\n    "), multiline=True),
        ),
    )
    if job.unverified or job.rejected:
        console.print(
            Text.assemble(
                ("unverified: ", "yellow"),
                text(", ".join(job.unverified) or "-"),
                " (anyone who can send to the DLQ writes sqsjobs.* attributes; `retry` sends only to a verified queue)",
            ),
            soft_wrap=True,
        )
        for name in job.rejected:
            value = job.message.attributes.get(PREFIX + name, "")
            shown = value[:_REASON_CHARS] + ("..." if len(value) > _REASON_CHARS else "")
            console.print(Text.assemble(f"  ignored {PREFIX}{name}: ", text(shown)), soft_wrap=True)
    if job.claimants:
        console.print(
            Text(
                f"{job.claimants} other DLQ message(s) claim this id but are not copies of this job "
                "(`retry`/`forget` leave them; they are listed as jobs of their own)",
                style="yellow",
            )
        )
    if job.copies > 1:
        console.print(
            f"[yellow]{job.copies} copies of this job are in the DLQ[/] (shown once; `retry` sends it once and "
            "removes them all, `forget` removes them all)"
        )
    if job.traceback:
        console.print(Panel(text(job.traceback.rstrip(), multiline=True), title="traceback (innermost frames)"))
    try:
        body = store.body(job)
    except RetryRefused as exc:
        console.print(Text(f"body not shown: {clean(exc)}", style="yellow"))
        return
    try:
        revealed = reveal(body, the_app.encryptor) if job.encrypted else None
    except EncryptionUnavailable:
        console.print(Text("KMS unreachable; try again (the payload below is still sealed)", style="yellow"))
    except BadMessageError as exc:
        console.print(Text(f"payload encrypted; cannot decrypt with your credentials: {clean(exc)}", style="yellow"))
    else:
        if revealed is not None:
            console.print(Text("decrypted (signature not checked here):", style="bold yellow"))
            body = revealed
    _print_body(body, full)


def _print_body(body: str, full: bool) -> None:
    if len(body) <= _PRETTY_JSON_CHARS:
        try:
            pretty = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            pass
        else:
            shown, more = _bounded(pretty, full)
            console.print(Syntax(clean(shown, multiline=True), "json", word_wrap=True))
            if more:
                console.print(_cut_note(more))
            return
    shown, more = _bounded(body, full)
    console.print(Text(f"body ({len(body)} characters, not JSON):", style="bold"))
    console.print(text(shown, multiline=True), soft_wrap=True, highlight=False)
    if more:
        console.print(_cut_note(more))


def _bounded(value: str, full: bool) -> tuple[str, int]:
    """At most BODY_CHARS characters and BODY_LINES lines of `value`, and how many characters were left out."""
    if full:
        return value, 0
    shown = value[:BODY_CHARS]
    lines = shown.split("\n")
    if len(lines) > BODY_LINES:
        shown = "\n".join(lines[:BODY_LINES])
    return shown, len(value) - len(shown)


def _cut_note(more: int) -> Text:
    return Text(f"... {more} more characters (--full prints them all)", style="dim")


@group.command("retry")
def retry(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids to retry.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every failed job (of --queue).")] = False,
    app: AppOption = None,
    queue: QueueOption = None,
    accept_unverified: Annotated[
        bool,
        typer.Option(
            "--accept-unverified",
            help="Also retry the named jobs whose reason is expired_signature or signature: you vouch for the "
            "body (an expired one is re-signed and runs; an unsigned one is sent as it is, never signed).",
        ),
    ] = False,
) -> None:
    """Send failed jobs back to their queues (once each): same job id, attempts reset; removes every DLQ copy."""
    if not job_ids and not all_ and not queue:
        err_console.print("Name job ids, or use --all / --queue.")
        raise typer.Exit(2)
    if accept_unverified and not job_ids:
        err_console.print("--accept-unverified takes the job ids you vouch for, one by one (not --all / --queue).")
        raise typer.Exit(2)
    store = FailedJobs(build_app(app))
    with console.status("retrying failed jobs..."):
        done = store.retry(job_ids or None, queue=queue, accept_unverified=accept_unverified)
    console.print(f"Retried {len(done)} job(s).{_copies_note(done)}")
    for job_id, why in sorted(store.refused.items()):
        err_console.print(Text(f"Not retried: {clean(job_id)}: {clean(why)}"))
    _unmatched_note(store)
    missing = set(job_ids or []) - {job.id for job in done} - set(store.refused)
    if missing:
        err_console.print(Text(f"Not found: {', '.join(clean(m) for m in sorted(missing))}"))
    _incomplete(store)
    if missing or store.refused:
        raise typer.Exit(1)


@group.command("forget")
def forget(job_id: Annotated[str, typer.Argument(help="The job id to delete.")], app: AppOption = None) -> None:
    """Delete one failed job (every DLQ copy of it) for good."""
    store = FailedJobs(build_app(app))
    if not store.forget(job_id):
        err_console.print(Text(f"No failed job {clean(job_id)}."))
        _incomplete(store)
        raise typer.Exit(1)
    console.print(Text(f"Forgot {clean(job_id)}."))
    _unmatched_note(store)
    _incomplete(store)


@group.command("flush")
def flush(app: AppOption = None, queue: QueueOption = None) -> None:
    """Delete every failed job (of --queue)."""
    store = FailedJobs(build_app(app))
    count = store.flush(queue)
    console.print(f"Deleted {count} failed job(s).")
    _incomplete(store)


def _incomplete(store: FailedJobs) -> None:
    """Exit 1, saying why on stderr, when the read of the DLQ may have missed jobs: a `flush` or
    `retry --all` that did not see everything must not look like one that did."""
    if store.incomplete:
        err_console.print(Text("Incomplete: the DLQ could not be read whole; run the command again.", style="bold"))
        for why in store.incomplete[:10]:
            err_console.print(Text(f"  {clean(why)}"))
        raise typer.Exit(1)


def _unmatched_note(store: FailedJobs) -> None:
    for job_id, count in sorted(store.unmatched.items()):
        err_console.print(
            Text(f"Left {count} other DLQ message(s) claiming {clean(job_id)}: not copies of that job (unverified).")
        )


def _copies_note(done: list[CollectedFailedJob]) -> str:
    copies = sum(job.copies for job in done)
    return f" Removed {copies} DLQ copies." if copies > len(done) else ""


def _reason(reason: str, error: str) -> str:
    line = f"{reason}: {error}" if error else reason
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 3] + "..."
