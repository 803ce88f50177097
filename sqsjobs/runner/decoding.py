"""From a body to a job: each body decoded once (even when a way in asks for its timeout first), then validated.

The decode sees the whole received message, not just its body: a signature is checked against the
queue the message came from, the S3 object its body was read from and the time SQS says it was sent.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from pydantic import ValidationError

from .. import policy
from ..connections.base import ReceivedMessage
from ..context import Services
from ..decisions import Release
from ..envelope import Envelope, decode
from ..errors import BadMessageError
from ..job_class import Job
from ..payload_fields import describe_problems, load, warn_unknown
from ..registry import Registry

log = logging.getLogger("sqsjobs.runner")

#: Decodes kept between `timeout_for` and `process` (a Lambda batch is at most 10,000 records).
_KEPT = 10_000
#: How long a message waits when KMS could not be asked (the runner's wait after a store error).
_KMS_RETRY_S = 30


class DecodeCache:
    """Envelopes decoded for `Runner.timeout_for`, handed to the `process` of the same receipt."""

    def __init__(self, decode: Callable[[ReceivedMessage], Envelope]) -> None:
        self._decode = decode
        self._kept: OrderedDict[str, Envelope | BadMessageError] = OrderedDict()
        self._lock = threading.Lock()

    def forget(self, message: ReceivedMessage) -> None:
        """A message decoded with `keep` that will not be processed here (handed back unstarted)."""
        with self._lock:
            self._kept.pop(message.receipt_handle, None)

    def timeout_for(self, message: ReceivedMessage, registry: Registry, default: float) -> float:
        """`Runner.timeout_for`: by the one rule, 0 for a message that will not run; the decode is kept."""
        decoded = self.get(message, keep=True)
        if isinstance(decoded, BadMessageError) or decoded.job not in registry:
            return 0.0
        return policy.timeout(registry.get(decoded.job).timeout, None, default)

    def get(self, message: ReceivedMessage, keep: bool = False) -> Envelope | BadMessageError:
        """The envelope, or why the body is none; `keep` holds it for the next call on this receipt."""
        if self._kept:  # only the Lambda adapter keeps any, and only for records it asked the timeout of
            with self._lock:
                cached = self._kept.pop(message.receipt_handle, None)
            if cached is not None:
                return cached
        try:
            decoded: Envelope | BadMessageError = self._decode(message)
        except BadMessageError as exc:
            decoded = exc
        if keep:
            with self._lock:
                self._kept[message.receipt_handle] = decoded
                while len(self._kept) > _KEPT:
                    self._kept.popitem(last=False)
        return decoded


def decode_received(message: ReceivedMessage, app: Services) -> Envelope:
    """The envelope of a message; with signing keys, verified for its queue, its S3 object and its age."""
    pointer = message.pointer
    sent_at = message.sent_at or app.clock()
    stamp = message.attributes.get(policy.FIRST_SENT_ATTRIBUTE)
    if stamp and app.signing_key is not None:
        # A copy a worker re-sent (handed back unstarted, postponed): its job was sent when the stamp says.
        vouched = app.signing_key.first_sent(message.body, stamp, sent_at)
        if vouched is not None:
            sent_at = min(sent_at, vouched)
    return decode(
        message.body,
        app.signing_key,
        queue=message.queue,
        object_key=pointer.key if pointer is not None else None,
        sent_at=sent_at,
    )


def open_sealed(envelope: Envelope, message: ReceivedMessage, app: Services) -> Envelope | BadMessageError | Release:
    """An encrypted job's envelope with its payload (and sealed chain links) in clear; the envelope itself
    when nothing is sealed (no KMS call). `undecryptable` for good (another key, tampered, moved to another
    job, AccessDenied); a passing KMS fault is tried again later, like an S3 read, for SQSJOBS_TRIES receives."""
    if envelope.encrypted is None and envelope.chain is None:
        return envelope  # nothing can be sealed: plain jobs never load the encryption module (cold starts)
    from ..encryption import EncryptionUnavailable, is_sealed, open_envelope

    if not is_sealed(envelope):
        return envelope
    try:
        return open_envelope(app.encryptor, envelope)
    except BadMessageError as exc:
        return exc
    except EncryptionUnavailable as exc:
        if message.receive_count < app.settings.tries:
            log.warning("%s; message %s is tried again later", exc, message.message_id)
            return Release(_KMS_RETRY_S, str(exc))
        return BadMessageError("undecryptable", f"{exc}, in {message.receive_count} receives; it was not run")


def build_job(cls: type[Job], envelope: Envelope, clock: Callable[[], float] | None = None) -> Job | BadMessageError:
    """The job the payload describes, validated by its class; or why it does not fit (`invalid_payload`).
    `clock` (the app's) spaces the warnings about fields the class does not declare."""
    try:
        job = load(cls, envelope.payload)
    except ValidationError as exc:
        return BadMessageError("invalid_payload", describe_problems(cls.job_name, exc.errors(), cls))
    except Exception as exc:  # a validator of the job's own that raised something else
        return BadMessageError("invalid_payload", f"payload does not fit {cls.job_name}: {type(exc).__name__}")
    warn_unknown(cls, cls.job_name, envelope.payload, clock)  # a producer newer than this worker: said, not dropped
    return job
