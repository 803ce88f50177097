"""What the soak dispatches, and what it expects of each job.

A plan is a shuffled list of units (one plain job, a unique pair, a chain, a batch, ...), each
with the tags of the jobs it makes and what each must end as: `done` (its `end` marker exists),
or a DLQ reason. The driver dispatches units in waves; `checks` compares the markers, the DLQ
and the batch records with these expectations.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqsjobs import App, batch, chain
from sqsjobs.timing import utc_iso

from . import jobs as j

#: The odds of each kind of unit (a unit may make several jobs: chains, batches, pairs).
WEIGHTS: dict[str, int] = {
    "plain": 18,
    "async_plain": 8,
    "unique": 8,
    "idempotent": 10,
    "chain": 14,
    "batch": 16,
    "rate_limited": 8,
    "large": 10,
    "designed_failure": 5,
    "garbage": 3,
}
LARGE_BYTES = 6000


@dataclass
class Expect:
    """One job of the plan: its tag, kind, how it must end, and (when known) its job id."""

    tag: str
    kind: str
    outcome: str = "done"  # or a DLQ reason: permanent, failed_by_job, tries_exhausted, malformed, ...
    job_id: str | None = None
    #: never: must not run at all (a dropped unique duplicate, a link after a failed one, an unsent callback)
    never: bool = False


@dataclass
class Unit:
    kind: str
    n: int
    spec: dict[str, Any] = field(default_factory=dict)
    expects: list[Expect] = field(default_factory=list)
    dispatched_at: float = 0.0
    #: what the dispatch itself reported (unique pairs: queued flags)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Jobs this unit puts on the queue (for the wave budget and the job count)."""
        return sum(1 for e in self.expects if not e.never)


def make_plan(total: int, seed: int) -> list[Unit]:
    rng = random.Random(seed)
    kinds, weights = zip(*WEIGHTS.items(), strict=True)
    units: list[Unit] = []
    count = 0
    n = 0
    while count < total:
        unit = _unit(rng.choices(kinds, weights)[0], n, rng)
        units.append(unit)
        count += unit.size
        n += 1
    rng.shuffle(units)
    return units


def _unit(kind: str, n: int, rng: random.Random) -> Unit:
    u = Unit(kind, n)
    tag = f"{kind[:3]}{n}"
    if kind in ("plain", "async_plain", "rate_limited", "large"):
        u.expects.append(Expect(tag, kind))
    elif kind == "unique":
        u.spec["key"] = f"key-{n}"
        u.expects += [Expect(tag, kind), Expect(f"{tag}-dup", kind, never=True)]
    elif kind == "idempotent":
        u.spec["key"] = f"idem-{n}"
        u.spec["flaky"] = rng.random() < 0.3
        u.expects += [Expect(f"{tag}-1", kind), Expect(f"{tag}-2", kind)]
    elif kind == "chain":
        fail_at = rng.choice([None, None, 0, 1, 2])
        u.spec["fail_at"] = fail_at
        for pos in range(3):
            if fail_at is None or pos < fail_at:
                u.expects.append(Expect(f"{tag}-{pos}", "chain_link"))
            elif pos == fail_at:
                u.expects.append(Expect(f"{tag}-{pos}", "chain_link", outcome="permanent"))
            else:
                u.expects.append(Expect(f"{tag}-{pos}", "chain_link", never=True))
        u.expects.append(Expect(f"{tag}:catch", "callback", never=fail_at is None))
    elif kind == "batch":
        failing = set(rng.sample(range(5), rng.choice([0, 0, 1, 2])))
        allow = rng.random() < 0.5
        u.spec.update(failing=sorted(failing), allow_failures=allow)
        for i in range(5):
            u.expects.append(Expect(f"{tag}-{i}", "batch_member", outcome="permanent" if i in failing else "done"))
        cancelled = bool(failing) and not allow
        u.expects.append(Expect(f"{tag}:then", "callback", never=bool(failing) or cancelled))
        u.expects.append(Expect(f"{tag}:catch", "callback", never=not failing))
        u.expects.append(Expect(f"{tag}:finally", "callback"))
    elif kind == "designed_failure":
        cls, reason = rng.choice(
            [("fail-by-job", "failed_by_job"), ("permanent", "permanent"), ("exhaust", "tries_exhausted")]
        )
        u.spec["job"] = cls
        u.expects.append(Expect(tag, f"designed:{cls}", outcome=reason))
    elif kind == "garbage":
        what = rng.choice(["malformed", "unknown_job", "invalid_payload"])
        u.spec["what"] = what
        u.expects.append(Expect(tag, f"garbage:{what}", outcome=what, job_id=str(uuid.uuid4())))
    else:  # pragma: no cover - WEIGHTS and this function go together
        raise ValueError(kind)
    return u


def dispatch(app: App, unit: Unit, sqs: Any, queue_url: str) -> None:
    """Send one unit (from the driver process, which has no fault injection)."""
    kind, spec = unit.kind, unit.spec
    first = unit.expects[0]
    if kind == "plain":
        first.job_id = j.Plain(tag=first.tag).dispatch().job_id
    elif kind == "async_plain":
        first.job_id = j.AsyncPlain(tag=first.tag).dispatch().job_id
    elif kind == "rate_limited":
        first.job_id = j.Rated(tag=first.tag).dispatch().job_id
    elif kind == "large":
        first.job_id = j.Large(tag=first.tag, blob=_blob(first.tag)).dispatch().job_id
    elif kind == "unique":
        a = j.Unique(tag=first.tag, key=spec["key"]).dispatch()
        unit.result["second_dispatch_at"] = time.time()
        b = j.Unique(tag=unit.expects[1].tag, key=spec["key"]).dispatch()
        first.job_id, unit.expects[1].job_id = a.job_id, b.job_id
        unit.result.update(first_queued=a.queued, second_queued=b.queued)
    elif kind == "idempotent":
        for e in unit.expects:
            e.job_id = j.Idempotent(tag=e.tag, key=spec["key"], flaky=spec["flaky"]).dispatch().job_id
    elif kind == "chain":
        tag = first.tag.rsplit("-", 1)[0]
        links = [j.Step(tag=f"{tag}-{pos}", broken=spec["fail_at"] == pos) for pos in range(3)]
        unit.result["chain_id"] = chain(links).catch(j.Callback(tag=f"{tag}:catch")).dispatch(app)
    elif kind == "batch":
        tag = first.tag.rsplit("-", 1)[0]
        members = [j.Step(tag=f"{tag}-{i}", broken=i in spec["failing"]) for i in range(5)]
        pending = batch(members).name(tag)
        pending = pending.then(j.Callback(tag=f"{tag}:then")).catch(j.Callback(tag=f"{tag}:catch"))
        pending = pending.finally_(j.Callback(tag=f"{tag}:finally"))
        if spec["allow_failures"]:
            pending = pending.allow_failures()
        unit.result["batch_id"] = pending.dispatch(app).id
    elif kind == "designed_failure":
        cls = {"fail-by-job": j.FailByJob, "permanent": j.Permanent, "exhaust": j.Exhaust}[spec["job"]]
        first.job_id = cls(tag=first.tag).dispatch().job_id
    elif kind == "garbage":
        body = _garbage(spec["what"], first, app)
        spec["body"] = body
        message_id = sqs.send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"]
        if spec["what"] == "malformed":
            # A body that is not an envelope is listed by the DLQ copy's message id; the checks
            # find its row by body and use that id.
            spec["source_message_id"] = message_id
    else:  # pragma: no cover
        raise ValueError(kind)


def _blob(tag: str) -> str:
    return (tag + "-") * (LARGE_BYTES // (len(tag) + 1) + 1)


def _garbage(what: str, expect: Expect, app: App) -> str:
    if what == "malformed":
        return f"not json {{ {expect.tag}"
    envelope = {
        "v": 1,
        "id": expect.job_id,
        "job": "soak.no-such-job" if what == "unknown_job" else j.Plain.job_name,
        "payload": {"tag": 12345} if what == "invalid_payload" else {"tag": expect.tag},
        "queue": "default",
        "dispatched_at": utc_iso(app.clock()),
    }
    return json.dumps(envelope)


def all_expects(units: list[Unit]) -> Iterator[tuple[Unit, Expect]]:
    for unit in units:
        for e in unit.expects:
            yield unit, e
