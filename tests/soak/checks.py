"""After the run: compare what happened (markers, the DLQ as `failed list` reads it, batch records)
with the plan, and compute the figures.

Each violation is one dict: `check` (which promise), `tag`/`ids`, `detail`, and `evidence` (marker
lines and worker log lines that mention the job). What the docs allow is counted, not failed:
a plain job (or a batch callback, itself a plain job) run again after its worker was SIGKILLed
before its delete was flushed, and any job whose run was cut short by a kill.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqsjobs import aws, find_batch
from sqsjobs.failed_jobs import FailedJobs

from .lost_answers import lost_send_answer

if TYPE_CHECKING:
    from .driver import RunData
    from .plan import Expect, Unit

#: A kill this long after a run's end may still have come before its decision: the decision's DynamoDB
#: writes (the "ended" mark, a batch's counters) meet injected throttles and 500s that botocore retries with
#: backoff, so a run can end seconds before it is decided (a soak once saw 3.7 s). What proves the decision
#: never happened is the second condition in `rerun_explained`: no outcome from that worker after the end.
KILL_WINDOW_S = 20.0
WORKFLOW_KINDS = ("chain_link", "batch_member")


@dataclass
class Result:
    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[dict[str, Any]] = field(default_factory=list)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations


def read_markers(directory: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(directory.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
    records.sort(key=lambda r: r.get("t", 0))
    return records


class Checker:
    def __init__(self, data: RunData, say: Callable[[str], None]) -> None:
        self.data = data
        self.say = say
        self.result = Result(workdir=str(data.workdir))
        self.records = read_markers(data.markers)
        self.by_tag: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.by_id: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.by_key: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for r in self.records:
            if "tag" in r:
                self.by_tag[r["tag"]].append(r)
            if r.get("id"):
                self.by_id[r["id"]].append(r)
            if r.get("key"):
                self.by_key[r["key"]].append(r)
        # Every kill of each pid: the kernel reuses pids, and a soak kills and restarts a hundred workers
        # (a later worker's kill must not hide an earlier one's, which explains its rerun).
        self.killed: dict[int, list[float]] = collections.defaultdict(list)
        for kill in data.kills:
            self.killed[kill["pid"]].append(kill["at"])
        self.allowed: collections.Counter[str] = collections.Counter()
        self.multi_copy: list[dict[str, Any]] = []
        self.extra_ids: dict[str, list[str]] = {}

    # -- helpers -----------------------------------------------------------------------
    def violate(self, check: str, detail: str, tag: str = "", ids: list[str] | None = None) -> None:
        self.result.violations.append(
            {"check": check, "tag": tag, "ids": [i for i in ids or [] if i], "detail": detail}
        )

    def ids_of(self, e: Expect) -> list[str]:
        ids = [e.job_id] if e.job_id else []
        ids += self.extra_ids.get(e.tag, [])
        for r in self.by_tag.get(e.tag, []):
            if r.get("id") and r["id"] not in ids:
                ids.append(r["id"])
        return ids

    def events(self, tag: str, ev: str) -> list[dict[str, Any]]:
        return [r for r in self.by_tag.get(tag, []) if r["ev"] == ev]

    def outcomes(self, job_id: str) -> list[dict[str, Any]]:
        return [r for r in self.by_id.get(job_id, []) if r["ev"] == "outcome" and r["kind"] in ("processed", "failed")]

    def sent_twice_by_botocore(self, ids: list[str]) -> bool:
        """Every send of these jobs (`queued`) came with a lost answer in its worker (tests.soak.lost_answers)."""
        sends = [r for i in ids for r in self.by_id.get(i, []) if r["ev"] == "outcome" and r["kind"] == "queued"]
        return bool(sends) and all(lost_send_answer(self.records, r["pid"], r["t"]) for r in sends)

    def killed_soon_after(self, record: dict[str, Any]) -> bool:
        return any(record["t"] <= at <= record["t"] + KILL_WINDOW_S for at in self.killed.get(record["pid"], ()))

    def rerun_explained(self, ends: list[dict[str, Any]], job_id: str | None) -> bool:
        """Every end but the last was followed by its worker's SIGKILL, before any decided outcome."""
        for end in ends[:-1]:
            if not self.killed_soon_after(end):
                return False
            if job_id and any(o["pid"] == end["pid"] and o["t"] >= end["t"] for o in self.outcomes(job_id)):
                return False
        return True

    def copy_note(self, e: Expect, ids: list[str], rows: list[Any]) -> dict[str, Any]:
        """A job with more than one DLQ copy: what the markers say about how (kept as a figure)."""
        markers = sorted((r for i in ids for r in self.by_id.get(i, [])), key=lambda r: r["t"])
        return {
            "tag": e.tag,
            "kind": e.kind,
            "ids": ids,
            "copies": [getattr(r, "copies", 1) for r in rows],
            "attempts": [r.attempts for r in rows],
            "markers": [json.dumps(r, separators=(",", ":")) for r in markers[:12]],
            "kills": {str(r["pid"]): self.killed[r["pid"]] for r in markers if self.killed.get(r["pid"])},
        }

    def done_duplicate(self, row: Any) -> bool:
        """A missing_payload row whose S3 key (`sqsjobs/<job id>-<8 hex>`) names a job that finished."""
        found = re.search(r"sqsjobs/([0-9a-f-]{36})-[0-9a-f]{8}", row.error)
        return bool(found) and any(r["ev"] == "end" for r in self.by_id.get(found.group(1), []))

    # -- the checks --------------------------------------------------------------------
    def run(self) -> Result:
        data = self.data
        if not data.drained:
            self.violate("drained", "the queue was not empty before --timeout; see the per-job violations")
        for exit_ in data.exits:
            self.violate("worker exit", f"a worker exited on its own: {exit_}", ids=[str(exit_.get("pid"))])
        self.say("reading the DLQ through sqsjobs.failed_jobs.FailedJobs (as `sqsjobs failed list` does)...")
        started = time.monotonic()
        # `failed list` holds what it read hidden for as long as it reads (sqsjobs.dlq_reading), so a
        # DLQ of thousands is read once, whole; a read that could not is a violation, not a short list.
        store = FailedJobs(data.app, ["default"])
        rows = store.list()
        if store.incomplete:
            self.violate("dlq read", "; ".join(store.incomplete))
        dlq_read_s = time.monotonic() - started
        self.dlq: dict[str, list[Any]] = collections.defaultdict(list)
        for row in rows:
            self.dlq[row.id].append(row)
        # A body that is not an envelope has no job id: `failed list` shows it under its DLQ copy's
        # message id, so each copy of one malformed message is a row of its own. Found by body.
        by_body: dict[str, list[Any]] = collections.defaultdict(list)
        for row in rows:
            by_body[row.body].append(row)
        for unit in data.units:
            # A run that timed out leaves units never dispatched: they have no body to look for.
            body = unit.spec.get("body")
            if unit.kind == "garbage" and unit.spec.get("what") == "malformed" and body and by_body.get(body):
                found = by_body[body]
                unit.expects[0].job_id = found[0].id
                self.extra_ids[unit.expects[0].tag] = [row.id for row in found[1:]]
        expected_fail: set[str] = set()
        for unit in data.units:
            if unit.result.get("dispatch_error"):
                self.violate("dispatch", unit.result["dispatch_error"], unit.expects[0].tag)
                continue
            for e in unit.expects:
                if e.outcome != "done" and not e.never:
                    expected_fail.update(self.ids_of(e))
            self.check_unit(unit)
        self.check_where_coroutines_ran()
        for row in rows:
            if row.reason == "missing_payload" and self.done_duplicate(row):
                # docs/payloads.md: a duplicate of a finished large job finds its object deleted and is
                # failed as missing_payload instead of running twice. Counted, not failed.
                self.allowed["missing_payload_duplicate_of_a_done_job"] += 1
                continue
            if row.reason == "redrive":
                self.violate(
                    "DLQ reason",
                    f"DLQ message without sqsjobs.reason (moved by the redrive policy: {row.error})",
                    row.job,
                    [row.id],
                )
            elif row.id not in expected_fail:
                self.violate(
                    "unexpected DLQ",
                    f"{row.job} in the DLQ as {row.reason}: {row.error}; body {row.body[:200]!r}",
                    "",
                    [row.id],
                )
        self.figures(rows, dlq_read_s)
        self.attach_evidence()
        return self.result

    def check_unit(self, unit: Unit) -> None:
        kind = unit.kind
        if kind == "unique":
            if unit.result.get("first_queued") is not True:
                self.violate("unique", "the first dispatch of a fresh unique key was not queued", unit.expects[0].tag)
            first_ends = self.events(unit.expects[0].tag, "end")
            if first_ends and first_ends[0]["t"] < unit.result.get("second_dispatch_at", 0):
                # The first had already run and freed its lock: the second is a fresh job.
                unit.expects[1].never = not unit.result.get("second_queued")
            elif unit.result.get("second_queued") is not False:
                self.violate(
                    "unique queued twice",
                    "a second dispatch of the same unique key was queued while the first held the lock",
                    unit.expects[1].tag,
                    [e.job_id or "" for e in unit.expects],
                )
        if kind == "idempotent":
            self.check_idempotent(unit)
        if kind == "batch":
            self.check_batch(unit)
        for e in unit.expects:
            self.check_expect(unit, e)

    def check_expect(self, unit: Unit, e: Expect) -> None:
        starts, ends = self.events(e.tag, "start"), self.events(e.tag, "end")
        ids = self.ids_of(e)
        rows = [row for i in ids for row in self.dlq.get(i, [])]
        if e.never:
            if starts:
                self.violate("must not run", f"{e.kind} {e.tag} ran {len(starts)} time(s)", e.tag, ids)
            if rows:
                self.violate("must not run", f"{e.kind} {e.tag} is in the DLQ", e.tag, ids)
            return
        if e.outcome == "done":
            if unit.kind == "idempotent":
                pass  # done-ness is per key (check_idempotent): a duplicate message is acknowledged unrun
            elif not ends:
                self.violate("not done", f"{e.kind} {e.tag} never finished ({len(starts)} start(s))", e.tag, ids)
            if rows:
                reasons = ", ".join(f"{r.reason}: {r.error}" for r in rows)
                self.violate("not done", f"{e.kind} {e.tag} should succeed but is in the DLQ ({reasons})", e.tag, ids)
        else:
            copies = [getattr(r, "copies", 1) for r in rows]
            if not rows:
                self.violate(
                    "designed failure", f"{e.kind} {e.tag} is not in the DLQ (expected {e.outcome})", e.tag, ids
                )
            elif len(rows) != 1:
                self.violate(
                    "designed failure",
                    f"{e.kind} {e.tag} shows as {len(rows)} rows in `failed list` (copies {copies})",
                    e.tag,
                    ids,
                )
            elif rows[0].reason != e.outcome:
                self.violate(
                    "designed failure",
                    f"{e.kind} {e.tag} is in the DLQ as {rows[0].reason} ({rows[0].error}), expected {e.outcome}",
                    e.tag,
                    ids,
                )
            if sum(copies) > 1:
                self.allowed[f"dlq_copies_beyond_one:{e.kind}"] += sum(copies) - 1
                self.multi_copy.append(self.copy_note(e, ids, rows))
        if len(ends) > 1:
            self.check_rerun(e, starts, ends, ids)
        if e.kind in WORKFLOW_KINDS or e.kind == "callback":
            first_runs = [s for s in starts if s.get("a") == 1]
            explained = e.kind == "callback" and self.rerun_explained(ends, None) and self.sent_twice_by_botocore(ids)
            if len(first_runs) > 1 and not explained:
                self.violate(
                    "sent once",
                    f"{e.kind} {e.tag} ran {len(first_runs)} times as attempt 1: more than one message was sent",
                    e.tag,
                    ids,
                )
        if e.kind in WORKFLOW_KINDS:
            for job_id in ids:
                decided = self.outcomes(job_id)
                if decided and any(s["t"] > decided[0]["t"] for s in starts):
                    self.violate(
                        "ran after decided",
                        f"{e.kind} {e.tag} started again after its run was decided ({decided[0]['kind']})",
                        e.tag,
                        ids,
                    )

    def check_where_coroutines_ran(self) -> None:
        """An `async def handle` runs as a task on an `--async` worker's loop, and on a private loop (the
        job's own thread) in a thread worker; and the `--async` workers ran jobs at all."""
        starts = [r for r in self.records if r["ev"] == "start"]
        options = self.data.options
        any_async = any(r.get("w") == "async" for r in starts)
        if min(options.async_workers, options.workers) > 0 and starts and not any_async:
            self.violate("--async", "no job ran on an --async worker: the soak did not test it")
        for r in starts:
            if "th" not in r:
                continue
            asynchronous = r.get("w") == "async"
            if (r["th"] == "sqsjobs-loop") != asynchronous:
                where = "an --async" if asynchronous else "a thread"
                detail = f"a coroutine job ran on thread {r['th']} of {where} worker"
                self.violate("--async", detail, r["tag"], [r["id"]])

    def check_rerun(self, e: Expect, starts: list[dict[str, Any]], ends: list[dict[str, Any]], ids: list[str]) -> None:
        job_id = ids[0] if ids else None
        if e.kind in ("plain", "async_plain", "large", "rate_limited", "unique", "designed:fail-by-job"):
            # Plain jobs run at least once: a SIGKILL reruns what finished in the last delete flush
            # (docs/worker.md), and so does a delete that failed for good. Counted, never failed.
            why = "after_kill" if self.rerun_explained(ends, None) else "without_kill"
            self.allowed[f"rerun_{why}:{e.kind}"] += len(ends) - 1
            return
        if e.kind == "callback":
            # A callback is a plain job that must be *sent* once ("sent once" below); a rerun of that
            # one message after a kill in its delete window is the plain-job allowance. The rerun may come
            # in a postponement's copy of that message (another message id, attempt > 1: it carries the
            # killed run), never as a fresh send (attempt 1 under another message id).
            first_mid = starts[0].get("mid") if starts else None
            same_message = all(s.get("mid") == first_mid or int(s.get("a", 1)) > 1 for s in starts[1:])
            if self.rerun_explained(ends, None) and same_message:
                self.allowed["rerun_after_kill:callback"] += len(ends) - 1
                return
            if self.rerun_explained(ends, None) and self.sent_twice_by_botocore(ids):
                self.allowed["rerun_after_kill_of_a_lost_answer_copy:callback"] += len(ends) - 1
                return
            self.violate("callback ran twice", f"{e.kind} {e.tag} finished {len(ends)} times", e.tag, ids)
            return
        if e.kind in WORKFLOW_KINDS:
            if self.rerun_explained(ends, job_id):
                self.allowed[f"rerun_after_kill:{e.kind}"] += len(ends) - 1
                return
            self.violate(
                "chain link ran twice" if e.kind == "chain_link" else "batch member ran twice",
                f"{e.kind} {e.tag} finished {len(ends)} times; not explained by a kill before its run was decided",
                e.tag,
                ids,
            )

    def check_idempotent(self, unit: Unit) -> None:
        key = unit.spec["key"]
        records = self.by_key.get(key, [])
        tags = [e.tag for e in unit.expects]
        ids = [i for e in unit.expects for i in self.ids_of(e)]
        processed = [o for i in ids for o in self.outcomes(i) if o["kind"] == "processed"]
        first_done = min((o["t"] for o in processed), default=math.inf)
        starts = [r for tag in tags for r in self.events(tag, "start")]
        late = [s for s in starts if s["t"] > first_done]
        if late:
            self.violate(
                "idempotent ran after completed",
                f"key {key}: {len(late)} run(s) started after the key completed",
                tags[0],
                ids,
            )
        for step in ("a", "b", "c"):
            effects = [r for r in records if r["ev"] == "effect" and r["step"] == step]
            if not effects:
                self.violate("not done", f"idempotent key {key}: step {step} never ran", tags[0], ids)
                continue
            if len(effects) == 1:
                continue
            for later in effects[1:]:
                recorded = [
                    r
                    for r in records
                    if r["ev"] == "stepped" and r["step"] == step and r["id"] == later["id"] and r["t"] < later["t"]
                ]
                if recorded:
                    self.violate(
                        "idempotent effect twice",
                        f"key {key} step {step}: the effect ran again after the step was recorded",
                        tags[0],
                        ids,
                    )
                    break
            else:
                self.allowed["idempotent_effect_rerun_in_window"] += len(effects) - 1

    def check_batch(self, unit: Unit) -> None:
        batch_id = unit.result.get("batch_id")
        tag = unit.expects[0].tag.rsplit("-", 1)[0]
        if not batch_id:
            return
        found = find_batch(batch_id, self.data.app)
        if found is None:
            self.violate("batch", "find_batch found no record", tag, [batch_id])
            return
        failing = unit.spec["failing"]
        want = (5, 5 - len(failing), len(failing), True, bool(failing) and not unit.spec["allow_failures"])
        got = (found.total, found.processed, found.failed, found.finished, found.cancelled)
        if got != want:
            self.violate(
                "batch counter",
                f"batch {tag}: (total, processed, failed, finished, cancelled) = {got}, expected {want}",
                tag,
                [batch_id],
            )
        if not failing and not found.failed:
            return  # failed_job_ids() is a query; moto answers it by scanning the whole table
        failed_ids = set(found.failed_job_ids())
        want_ids = {i for e in unit.expects if e.kind == "batch_member" and e.outcome != "done" for i in self.ids_of(e)}
        if failed_ids != want_ids:
            self.violate("batch counter", f"batch {tag}: failed_job_ids {failed_ids} != {want_ids}", tag, [batch_id])

    # -- figures -----------------------------------------------------------------------
    def figures(self, rows: list[Any], dlq_read_s: float) -> None:
        data = self.data
        duration = (data.finished or time.time()) - data.started
        by_kind: collections.Counter[str] = collections.Counter()
        for unit in data.units:
            for e in unit.expects:
                if not e.never:
                    by_kind[e.kind.split(":")[0]] += 1
        total = sum(by_kind.values())
        runs = sum(1 for r in self.records if r["ev"] == "start")
        async_runs = sum(1 for r in self.records if r["ev"] == "start" and r.get("w") == "async")
        on_loop = sum(1 for r in self.records if r["ev"] == "start" and r.get("th") == "sqsjobs-loop")
        outcomes = collections.Counter(r["kind"] for r in self.records if r["ev"] == "outcome")
        reasons = collections.Counter(row.reason for row in rows)
        first_runs: dict[str, set[str]] = collections.defaultdict(set)
        for r in self.records:
            if r["ev"] == "start" and r.get("a") == 1 and r.get("mid"):
                first_runs[r["id"]].add(r["mid"])
        rated = collections.Counter(
            math.floor(r["t"]) for r in self.records if r["ev"] == "start" and r["tag"].startswith("rat")
        )
        self.result.figures = {
            "jobs": total,
            "jobs_by_kind": dict(sorted(by_kind.items())),
            "units": len(data.units),
            "runs (start markers)": runs,
            "runs_in_async_workers": async_runs,
            "coroutine_runs_on_an_event_loop": on_loop,
            "runs_by_outcome_event": dict(sorted(outcomes.items())),
            "kills (SIGKILL)": len(data.kills),
            "workers_started": len(data.worker_logs),
            "workers_exited_on_their_own": len(data.exits),
            "fault_rate": data.fault_rate,
            **self.fault_figures(),
            "dlq_rows (failed list)": len(rows),
            "dlq_by_reason": dict(sorted(reasons.items())),
            "dlq_read_s": round(dlq_read_s, 1),
            "jobs_delivered_as_two_messages": sum(1 for mids in first_runs.values() if len(mids) > 1),
            "allowed_reruns": dict(sorted(self.allowed.items())),
            "dlq_jobs_with_several_copies": self.multi_copy[:10],
            "rate_limited_max_starts_in_one_second": max(rated.values(), default=0),
            "s3_objects_left": s3_objects(data.app.settings.bucket),
            "duration_s": round(duration, 1),
            "jobs_per_s": round(total / duration, 1) if duration else 0,
            "drained": data.drained,
            "violations": len(self.result.violations),
        }

    def fault_figures(self) -> dict[str, Any]:
        """Injected faults: each worker's last `faults` line (a worker killed between its last report
        and its death undercounts by at most a second's worth)."""
        last: dict[int, dict[str, int]] = {}
        for r in self.records:
            if r["ev"] == "faults":
                last[r["pid"]] = r["counts"]
        if not last:
            return {"faults_injected": None}
        by_kind: collections.Counter[str] = collections.Counter()
        by_service: collections.Counter[str] = collections.Counter()
        for counts in last.values():
            for name, n in counts.items():
                service, _, kind = name.split(":")
                by_kind[kind] += n
                by_service[service] += n
        return {
            "faults_injected": sum(by_kind.values()),
            "faults_by_kind": dict(sorted(by_kind.items())),
            "faults_by_service": dict(sorted(by_service.items())),
        }

    def attach_evidence(self, limit: int = 40) -> None:
        wanted = {i for v in self.result.violations[:limit] for i in v["ids"]}
        log_lines: dict[str, list[str]] = collections.defaultdict(list)
        if wanted:
            for path in self.data.worker_logs:
                with contextlib.suppress(OSError):
                    for line in path.read_text(errors="replace").splitlines():
                        for i in wanted:
                            if i in line and len(log_lines[i]) < 8:
                                log_lines[i].append(f"{path.name}: {line[:600]}")
        for v in self.result.violations[:limit]:
            markers = [r for i in v["ids"] for r in self.by_id.get(i, [])]
            if v["tag"]:
                markers += [r for r in self.by_tag.get(v["tag"], []) if r not in markers]
            markers.sort(key=lambda r: r.get("t", 0))
            v["evidence"] = {
                "markers": [json.dumps(r, separators=(",", ":")) for r in markers[:20]],
                "worker_log": [line for i in v["ids"] for line in log_lines.get(i, [])][:12],
                "kills_of_these_pids": {
                    str(r["pid"]): self.killed[r["pid"]] for r in markers if self.killed.get(r.get("pid", -1))
                },
            }


def s3_objects(bucket: str) -> int | None:
    try:
        pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sum(page.get("KeyCount", 0) for page in pages)
    except Exception:
        return None


def check(data: RunData, say: Callable[[str], None]) -> Result:
    return Checker(data, say).run()
