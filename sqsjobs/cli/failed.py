"""`sqsjobs failed ...`: the dead-letter queues as a failed-jobs store.

Everything printed here that came from a message (ids, names, reasons, errors, tracebacks,
bodies) goes through `common.text` / `common.safe`: never read as rich markup, control
characters shown as `\\xNN`, and bodies cut to a bounded view. A value whose `sqsjobs.*`
attribute did not check out (`FailedJob.unverified`) is marked "(unverified)". A multi-line error is
indented under its label, so no message text starts a line of its own that reads like ours.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.text import Text

from ..encryption import EncryptionUnavailable, reveal
from ..errors import BadMessageError
from ..failed_copies import CollectedFailedJob
from ..failed_jobs import FailedJobs, RetryRefused
from ..failed_review import Hooks, Selection
from ..failed_triage import TriageSelection
from ..failures import PREFIX
from . import failed_redrive, failed_review
from .common import AppOption, QueueOption, build_app, clean, console, err_console, text
from .failed_review import (
    JobFilter,
    OlderThanFilter,
    ReasonFilter,
    SinceFilter,
    YesOption,
    build_filter,
    copies_note,
    delete_selected,
    left_note,
)
from .failed_review import field as _field
from .failed_review import incomplete as _incomplete
from .failed_review import unmatched_note as _unmatched_note

group = typer.Typer(
    help="Inspect, retry and remove failed jobs (they live in each queue's DLQ).",
    no_args_is_help=True,
    epilog="""[bold]Examples[/]

  sqsjobs failed summary --since 24h     [dim]# counts by queue, job, reason[/]
  sqsjobs failed list --reason tries_exhausted --since 24h --json
  sqsjobs failed show 6f1c...            [dim]# reason, traceback head, payload[/]
  sqsjobs failed retry 6f1c... 9a2b...   [dim]# back to their queues, attempts reset[/]
  sqsjobs failed retry --all --queue default
  sqsjobs failed retry --job billing.send-invoice --reason timeout
  sqsjobs failed retry 6f1c... --accept-unverified   [dim]# an expired_signature / signature copy you vouch for[/]
  sqsjobs failed forget 6f1c...
  sqsjobs failed flush --queue default   [dim]# asks first; --yes does not[/]
  sqsjobs failed prune --older-than 7d --yes
""",
)

#: Characters of a body `show` prints unless --full; a body may be up to 2 GiB through S3.
BODY_CHARS = 4000
BODY_LINES = 80
#: Bodies up to this size are parsed and pretty-printed as JSON; larger ones are shown as text.
_PRETTY_JSON_CHARS = 64 * 1024
_REASON_CHARS = 120
#: More jobs than this get a progress bar (on stderr) while `retry` sends them.
HANDFUL = 10

# list and summary (sqsjobs.cli.failed_review, which does not import this module); prune is at the end.
group.command("list")(failed_review.list_)
group.command("summary")(failed_review.summary)


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


@group.command("retry")
def retry(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids to retry.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every failed job (of --queue).")] = False,
    app: AppOption = None,
    queue: QueueOption = None,
    job: JobFilter = None,
    reason: ReasonFilter = None,
    since: SinceFilter = None,
    older_than: OlderThanFilter = None,
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
    filtered = any(v is not None for v in (job, reason, since, older_than))
    if not job_ids and not all_ and not queue and not filtered:
        err_console.print("Name job ids, or use --all / --queue / --job / --reason / --since / --older-than.")
        raise typer.Exit(2)
    if job_ids and (all_ or filtered):
        err_console.print("Name job ids, or select with --all and filters; not both.")
        raise typer.Exit(2)
    if accept_unverified and not job_ids:
        err_console.print("--accept-unverified takes the job ids you vouch for, one by one (not --all / --queue).")
        raise typer.Exit(2)
    the_app = build_app(app)
    flt = build_filter(the_app, job, reason, since, older_than)
    store = FailedJobs(the_app)
    selection = Selection(flt, store.proof)
    bar = _Bar("retrying")
    hooks = Hooks(select=selection, confirm=bar.start, advance=bar.advance)
    try:
        done = store.retry(job_ids or None, queue=queue, accept_unverified=accept_unverified, hooks=hooks)
    finally:
        bar.stop()
    console.print(f"Retried {len(done)} job(s).{copies_note(done)}")
    for job_id, why in sorted(store.refused.items()):
        err_console.print(Text(f"Not retried: {clean(job_id)}: {clean(why)}"))
    _unmatched_note(store)
    left_note(selection, "retried")
    missing = set(job_ids or []) - {j.id for j in done} - set(store.refused)
    if missing:
        err_console.print(Text(f"Not found: {', '.join(clean(m) for m in sorted(missing))}"))
    _incomplete(store)
    if missing or store.refused:
        raise typer.Exit(1)


class _Bar:
    """A progress bar on stderr once a verb knows it acts on more than a handful of jobs (a spinner before)."""

    def __init__(self, doing: str) -> None:
        self.doing = doing
        self.status = err_console.status("reading the DLQs...")
        self.status.start()
        self.progress: Progress | None = None
        self.task: Any = None

    def start(self, jobs: list[CollectedFailedJob]) -> bool:
        self.status.stop()
        if len(jobs) > HANDFUL:
            self.progress = Progress(
                TextColumn(f"{self.doing} failed jobs"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.doing, total=len(jobs))
        return True

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def stop(self) -> None:
        self.status.stop()
        if self.progress is not None:
            self.progress.stop()


@group.command("flush")
def flush(
    app: AppOption = None,
    queue: QueueOption = None,
    job: JobFilter = None,
    reason: ReasonFilter = None,
    since: SinceFilter = None,
    older_than: OlderThanFilter = None,
    yes: YesOption = False,
) -> None:
    """Delete every failed job (of --queue, matching the filters) for good; asks first unless --yes."""
    delete_selected(app, queue, job, reason, since, older_than, yes)


group.command("prune")(failed_review.prune)


@group.command("triage")
def triage(
    app: AppOption = None,
    queue: QueueOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be retried; send nothing.")] = False,
) -> None:
    """Retry the failed jobs whose `retry_later` triage rule says their time has come (docs/triage.md)."""
    the_app = build_app(app)
    store = FailedJobs(the_app)
    selection = TriageSelection(the_app, store.proof, the_app.clock(), act=not dry_run)
    if dry_run:
        store.list(queue, select=selection.select)
        done_ids = sorted(selection.due)
    else:
        bar = _Bar("retrying")
        try:
            done = store.retry(
                None, queue=queue, hooks=Hooks(select=selection.select, confirm=bar.start, advance=bar.advance)
            )
        finally:
            bar.stop()
        done_ids = sorted(j.id for j in done)
        for job_id, why in sorted(store.refused.items()):
            err_console.print(Text(f"Not retried: {clean(job_id)}: {clean(why)}"))
    verb = "Would retry" if dry_run else "Retried"
    console.print(f"{verb} {len(done_ids)} job(s) by their triage rules.")
    for job_id in done_ids:
        console.print(Text(f"  {clean(job_id)}"))
    if selection.waiting:
        soonest = min(selection.waiting.values())
        console.print(
            f"{len(selection.waiting)} more wait for their rule (the next in {max(0, soonest - the_app.clock()):.0f}s)."
        )
    if selection.exhausted:
        err_console.print(
            f"{selection.exhausted} failed job(s) were retried as many times as their rule allows (times=): "
            "left for a person."
        )
    if selection.unproven:
        err_console.print(
            f"{selection.unproven} failed job(s) prove too little (job, reason, time) for a rule to act on: "
            "review them with `sqsjobs failed list --include-unverified`."
        )
    _incomplete(store)


group.command("redrive")(failed_redrive.redrive)
