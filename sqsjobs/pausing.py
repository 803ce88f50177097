"""Pause and continue a queue, whichever way it is consumed.

Pollers read the pause from the table (sqsjobs.workers) on their next beat and take nothing more
from the queue; running jobs finish. A Lambda function reads no table, so its event source
mappings on the queue are disabled instead, and the pause item remembers which ones: `continue`
enables only those, never a mapping someone disabled for a reason of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from . import aws, workers
from .app import App
from .errors import ConfigurationError


@dataclass
class PauseResult:
    queue: str
    #: Event source mappings (UUIDs) this call disabled or enabled.
    mappings: list[str] = field(default_factory=list)
    #: False for `continue` on a queue that was not paused.
    changed: bool = True
    #: Mappings left as they were, and why (refused, or changing state).
    skipped: list[str] = field(default_factory=list)


def _queue_arn(app: App, queue: str) -> str:
    sqs = aws.client("sqs")
    name = app.settings.physical_queue_name(queue)
    try:
        url = name if name.startswith(("https://", "http://")) else sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        raise ConfigurationError(
            f"queue {queue!r} ({name}) does not exist; check the name, or run `sqsjobs provision`"
        ) from None
    arn: str = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return arn


def _mappings(arn: str) -> list[dict[str, Any]]:
    pages = aws.client("lambda").get_paginator("list_event_source_mappings").paginate(EventSourceArn=arn)
    return [m for page in pages for m in page.get("EventSourceMappings", [])]


def pause(app: App, queue: str, by: str) -> PauseResult:
    """Stop every consumer of `queue` taking jobs: pollers on their next beat, Lambda now."""
    arn = _queue_arn(app, queue)
    standing = app.store.get((workers.CONTROL, workers.pause_key(queue))) or {}
    disabled = sorted({str(u) for u in standing.get("mappings") or []})
    now = app.clock()
    # The pause first (pollers stop on their next beat), then each mapping, written down as soon as it
    # is disabled: a call refused half-way (another function's mapping, AccessDenied) still leaves
    # `continue` knowing every mapping this pause turned off.
    workers.pause(app.store, queue, now, by, mappings=disabled)
    lam = aws.client("lambda")
    skipped: list[str] = []
    for mapping in _mappings(arn):
        uuid = str(mapping["UUID"])
        # Only one that is on (or turning on): a mapping Creating or Updating may be one someone disabled,
        # and `continue` must never enable what this pause did not turn off.
        if mapping.get("State") not in ("Enabled", "Enabling"):
            if mapping.get("State") in ("Creating", "Updating"):
                skipped.append(f"{uuid} ({mapping.get('State')}: pause again once it settles)")
            continue
        try:
            lam.update_event_source_mapping(UUID=uuid, Enabled=False)
        except ClientError as exc:  # another function's mapping this operator may not touch, one deleted meanwhile
            skipped.append(f"{uuid} ({exc.response.get('Error', {}).get('Code', 'error')})")
            continue
        disabled = sorted({*disabled, uuid})
        workers.pause(app.store, queue, now, by, mappings=disabled)
    return PauseResult(queue, disabled, skipped=skipped)


def resume(app: App, queue: str) -> PauseResult:
    """Undo `pause`: pollers take jobs again on their next beat; the mappings it disabled are enabled."""
    _queue_arn(app, queue)  # a typo is an error, not a silent "was not paused"
    standing = app.store.get((workers.CONTROL, workers.pause_key(queue)))
    if standing is None:
        return PauseResult(queue, [], changed=False)
    enabled: list[str] = []
    lam = aws.client("lambda")
    for uuid in [str(u) for u in standing.get("mappings") or []]:
        try:
            lam.update_event_source_mapping(UUID=uuid, Enabled=True)
        except lam.exceptions.ResourceNotFoundException:
            continue  # deleted since (a redeploy): nothing to enable
        enabled.append(uuid)
    workers.resume(app.store, queue)
    return PauseResult(queue, enabled)
