"""Encrypted jobs (`encrypted = True`): the payload sealed with a KMS data key, AES-256-GCM.

Envelope encryption: KMS `GenerateDataKey` under `SQSJOBS_KMS_KEY` gives a 256-bit data key and the
same key encrypted by KMS (its "blob"); the payload is sealed locally with the data key and the blob
travels next to the ciphertext, in the envelope's `encrypted` field:

    {"v": 1, "alg": "A256GCM", "key": <b64 KMS blob>, "iv": <b64 12 bytes>, "ct": <b64 ciphertext + tag>}

The additional authenticated data is the job name and the job id, so a ciphertext moved to another job
(or another job's name) does not open. A chain link of an encrypted job class is sealed the same way,
bound to the message that carries it; so is one a batch record keeps in DynamoDB (its callbacks, the rest
of the chain waiting on the batch), bound to the batch id and the field that holds it. The envelope's
`payload` is `{}` on the wire; job name, ids, queue, times, batch id and the chain's ids stay readable
(and signed, when signing is on: the signature covers the ciphertext).

KMS is called rarely: the sealing side reuses one data key for `MAX_MESSAGES` messages or
`MAX_AGE_S` seconds, the opening side keeps up to `OPEN_CACHE` decrypted data keys (by blob) for
`OPEN_AGE_S` seconds. No KMS client exists until an encrypted job is dispatched or received.

`failed show` (operators' credentials) can call `reveal(body)` to show a DLQ body with its payload in clear.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .envelope import has_sealed
from .errors import BadMessageError, ConfigurationError

if TYPE_CHECKING:
    from .envelope import Envelope

log = logging.getLogger("sqsjobs.encryption")

SETTING = "SQSJOBS_KMS_KEY"
ALGORITHM = "A256GCM"
VERSION = 1
#: One data key seals at most this many messages (far below AES-GCM's 2**32 random-IV limit) ...
MAX_MESSAGES = 1000
#: ... and is used for at most this long, so a worker's memory holds a key for minutes, not days.
MAX_AGE_S = 300.0
#: Decrypted data keys kept by the opening side (by their KMS blob), each for at most OPEN_AGE_S.
OPEN_CACHE = 256
OPEN_AGE_S = 900.0
#: Bound to every data key by KMS (visible in CloudTrail; a blob made for anything else does not open).
CONTEXT = {"sqsjobs": "job-payload"}
#: KMS answers that no retry changes: the message is `undecryptable`.
_FOR_GOOD = frozenset(
    {
        "InvalidCiphertextException",
        "IncorrectKeyException",
        "AccessDeniedException",
        "NotFoundException",
        "DisabledException",
        "KMSInvalidStateException",
        "InvalidKeyUsageException",
        "InvalidGrantTokenException",
        "ValidationException",
    }
)
_IV_BYTES = 12
_TAG_BYTES = 16


class EncryptionUnavailable(Exception):
    """KMS could not be asked right now (throttled, 5xx, no network, after botocore's retries): try later."""


@dataclass(slots=True)
class _DataKey:
    plain: bytes
    blob: bytes
    born: float
    uses: int = 0


class Encryptor:
    """Seals and opens payloads; thread-safe; one per App. `key_id`: SQSJOBS_KMS_KEY (needed to seal only:
    KMS finds the key of a blob itself, and IAM decides which keys a role may decrypt with)."""

    def __init__(
        self,
        key_id: str | None,
        kms: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_messages: int = MAX_MESSAGES,
        max_age: float = MAX_AGE_S,
    ) -> None:
        self.key_id = key_id
        self._kms = kms or _kms_client
        self._clock = clock
        self._max_messages = max_messages
        self._max_age = max_age
        self._current: _DataKey | None = None
        self._opened: OrderedDict[bytes, _DataKey] = OrderedDict()
        self._lock = threading.Lock()

    # -- sealing ---------------------------------------------------------------------------------
    def seal(self, plaintext: bytes, aad: bytes) -> dict[str, Any]:
        """The `encrypted` field for `plaintext`. ConfigurationError without a key; KMS errors as raised."""
        key = self._data_key()
        iv = os.urandom(_IV_BYTES)
        sealed = _aes(key.plain, iv, aad, plaintext, seal=True)
        return {"v": VERSION, "alg": ALGORITHM, "key": _b64(key.blob), "iv": _b64(iv), "ct": _b64(sealed)}

    def _data_key(self) -> _DataKey:
        if not self.key_id:
            raise ConfigurationError(
                f"this job class is encrypted (encrypted = True) but {SETTING} is not set; set it to a KMS key "
                "id, ARN or alias (alias/...) this process may call kms:GenerateDataKey on (docs/security.md). "
                "An encrypted job is never sent in plain text"
            )
        with self._lock:  # one GenerateDataKey at a time: a burst of dispatches shares the new key
            now, key = self._clock(), self._current
            if key is None or key.uses >= self._max_messages or now - key.born >= self._max_age:
                made = self._kms().generate_data_key(KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=CONTEXT)
                key = self._current = _DataKey(bytes(made["Plaintext"]), bytes(made["CiphertextBlob"]), now)
            key.uses += 1
            return key

    # -- opening ---------------------------------------------------------------------------------
    def open(self, sealed: object, aad: bytes) -> bytes:
        """The plaintext; BadMessageError("undecryptable") for good, EncryptionUnavailable for a passing fault."""
        if not isinstance(sealed, Mapping) or sealed.get("v") != VERSION or sealed.get("alg") != ALGORITHM:
            raise _undecryptable(f"its encrypted field is not a version-{VERSION} {ALGORITHM} seal")
        blob, iv, ct = (_unb64(sealed.get(name), name) for name in ("key", "iv", "ct"))
        if len(iv) != _IV_BYTES or len(ct) < _TAG_BYTES:
            raise _undecryptable("its iv or ciphertext has the wrong length")
        return _aes(self._plain_key(blob), iv, aad, ct, seal=False)

    def _plain_key(self, blob: bytes) -> bytes:
        now = self._clock()
        with self._lock:
            cached = self._opened.get(blob)
            if cached is not None and now - cached.born < OPEN_AGE_S:
                self._opened.move_to_end(blob)
                return cached.plain
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            found = self._kms().decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "?"))
            if code in _FOR_GOOD:
                raise _undecryptable(
                    f"KMS refused its data key ({code}: {error.get('Message', '')}); another key, a tampered "
                    "key, or this role may not kms:Decrypt with it"
                ) from None
            raise EncryptionUnavailable(f"KMS could not decrypt its data key now ({code})") from exc
        except BotoCoreError as exc:
            raise EncryptionUnavailable(f"KMS could not be reached ({type(exc).__name__}: {exc})") from exc
        plain = bytes(found["Plaintext"])
        with self._lock:
            self._opened[blob] = _DataKey(plain, blob, now)
            while len(self._opened) > OPEN_CACHE:
                self._opened.popitem(last=False)
        return plain


# -- what the envelope carries -------------------------------------------------------------------
def payload_aad(job: str, job_id: str) -> bytes:
    return json.dumps(["sqsjobs/1", "payload", job, job_id]).encode()


def link_aad(job: str, carrier_id: str) -> bytes:
    return json.dumps(["sqsjobs/1", "link", job, carrier_id]).encode()


def seal_envelope(
    encryptor: Encryptor, envelope: Envelope, encrypted: bool, is_encrypted: Callable[[str], bool]
) -> None:
    """Seal the payload (when `encrypted`) and every chain link of an encrypted job class, in place."""
    if encrypted:
        plaintext = json.dumps(envelope.payload, separators=(",", ":"), ensure_ascii=False).encode()
        envelope.encrypted = encryptor.seal(plaintext, payload_aad(envelope.job, envelope.id))
        envelope.payload = {}
    if envelope.chain is not None:
        envelope.chain = _links(envelope.chain, lambda link: _seal_link(encryptor, link, envelope.id, is_encrypted))


def open_envelope(encryptor: Encryptor, envelope: Envelope) -> Envelope:
    """A copy with the payload and chain links in clear (the same envelope when nothing is sealed).

    Raises BadMessageError("undecryptable") or EncryptionUnavailable.
    """
    opened = envelope
    if envelope.encrypted is not None:
        payload = _object(encryptor.open(envelope.encrypted, payload_aad(envelope.job, envelope.id)), "payload")
        opened = replace(envelope, payload=payload, encrypted=None)
    if envelope.chain is not None and has_sealed(envelope.chain):
        chain = _links(envelope.chain, lambda link: _open_link(encryptor, link, envelope.id))
        opened = replace(opened, chain=chain)
    return opened


def is_sealed(envelope: Envelope) -> bool:
    return envelope.encrypted is not None or (envelope.chain is not None and has_sealed(envelope.chain))


def seal_links(encryptor: Encryptor, value: Any, carrier: str, is_encrypted: Callable[[str], bool]) -> Any:
    """A copy of links kept outside a message (a batch record's callbacks, the rest of the chain waiting on
    the batch) with the payload of every link of an encrypted class sealed, bound to `carrier`."""
    return _links(value, lambda link: _seal_link(encryptor, link, carrier, is_encrypted))


def open_links(encryptor: Encryptor, value: Any, carrier: str) -> Any:
    """`seal_links` undone: a copy in clear (`value` itself when nothing in it is sealed).

    Raises BadMessageError("undecryptable") or EncryptionUnavailable.
    """
    return _links(value, lambda link: _open_link(encryptor, link, carrier)) if has_sealed(value) else value


def _seal_link(encryptor: Encryptor, link: dict[str, Any], carrier: str, is_encrypted: Callable[[str], bool]) -> None:
    if "encrypted" in link:
        return  # sealed already: its payload is the `{}` left in its place
    if isinstance(link.get("job"), str) and isinstance(link.get("payload"), dict) and is_encrypted(link["job"]):
        plaintext = json.dumps(link["payload"], separators=(",", ":"), ensure_ascii=False).encode()
        link["encrypted"] = encryptor.seal(plaintext, link_aad(link["job"], carrier))
        link["payload"] = {}


def _open_link(encryptor: Encryptor, link: dict[str, Any], carrier: str) -> None:
    if "encrypted" in link:
        if not isinstance(link.get("job"), str):
            raise _undecryptable("a sealed chain link names no job")
        link["payload"] = _object(encryptor.open(link.pop("encrypted"), link_aad(link["job"], carrier)), "chain link")


def _links(value: Any, visit: Callable[[dict[str, Any]], None]) -> Any:
    """A deep copy of a chain (links, nested batches, their members and callbacks) with `visit` run on
    every dict in it; the envelope's shape was checked on decode (MAX_DEPTH), a dispatch's is ours."""
    if isinstance(value, list):
        return [_links(item, visit) for item in value]
    if isinstance(value, dict):
        copy = {key: (item if key in ("payload", "encrypted") else _links(item, visit)) for key, item in value.items()}
        visit(copy)
        return copy
    return value


# -- for operators: `sqsjobs failed show` -----------------------------------------------------------
def reveal(body: str, encryptor: Encryptor | None = None) -> str | None:
    """A DLQ body with its payload (and sealed chain links) in clear, for display with the operator's
    credentials; None when the body is not an sqsjobs envelope with anything sealed. Raises
    BadMessageError("undecryptable") (this role may not decrypt it, or it was tampered with) or
    EncryptionUnavailable. The signature is not checked here: show it as "not verified"."""
    from .envelope import decode

    try:
        envelope = decode(body)
    except BadMessageError:
        return None
    if not is_sealed(envelope):
        return None
    opened = open_envelope(encryptor or Encryptor(None), envelope)
    return json.dumps(opened.to_dict(), separators=(",", ":"), ensure_ascii=False)


# -- the pieces --------------------------------------------------------------------------------
def _kms_client() -> Any:
    from . import aws  # boto3 loads on the first encrypted job, not with the Lambda handler (cold start)

    return aws.client("kms")


def _aes(key: bytes, iv: bytes, aad: bytes, data: bytes, *, seal: bool) -> bytes:
    """AES-256-GCM through `cryptography`'s Cipher API: the tag follows the ciphertext (as AESGCM does)."""
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:  # pragma: no cover - a dependency of sqsjobs; only a broken install lacks it
        raise ConfigurationError("encrypted jobs need the `cryptography` package: pip install cryptography") from None
    if len(key) != 32:
        raise _undecryptable("its data key is not a 256-bit key")
    if seal:
        sealer = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
        sealer.authenticate_additional_data(aad)
        return sealer.update(data) + sealer.finalize() + sealer.tag
    opener = Cipher(algorithms.AES(key), modes.GCM(iv, data[-_TAG_BYTES:])).decryptor()
    opener.authenticate_additional_data(aad)
    try:
        return opener.update(data[:-_TAG_BYTES]) + opener.finalize()
    except InvalidTag:
        raise _undecryptable(
            "its ciphertext does not open with its data key for this job name and id (tampered, or moved from "
            "another job)"
        ) from None


def _object(plaintext: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(plaintext)
    except (ValueError, RecursionError):
        raise _undecryptable(f"its decrypted {what} is not JSON") from None
    if not isinstance(value, dict):
        raise _undecryptable(f"its decrypted {what} is not a JSON object")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise _undecryptable(f"its encrypted field has no {name!r}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _undecryptable(f"its encrypted {name!r} is not base64") from None


def _undecryptable(why: str) -> BadMessageError:
    return BadMessageError("undecryptable", f"encrypted job cannot be decrypted: {why}; it was not run")
