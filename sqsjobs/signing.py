"""Signing keys: where they come from, which one signs, which ones verify, and what a signature covers.

`SQSJOBS_SIGNING_KEY` is a literal secret or a reference resolved once, when the App is built:
`secretsmanager:<name or ARN>` (GetSecretValue) or `ssm:<parameter>` (GetParameter, decrypted).
The value is one key (key id `default`) or a keyring, a JSON object
`{"current": "<kid>", "<kid>": "<key>", "<kid2>": "<key2>"}`: `current` names the key that signs,
every key listed verifies. That is how a key is rotated without stopping workers (docs/security.md).

A signature is `<kid>:<hex HMAC-SHA256>` over the key id, the queue the message was sent to and the
envelope. The verifier also refuses a signed envelope that arrives on another queue, from an S3
object that is not one of its own, or (with `SQSJOBS_SIGNING_MAX_AGE`) sent too long after it was
dispatched or due: a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import object_keys
from .errors import BadMessageError, ConfigurationError
from .timing import parse_iso

if TYPE_CHECKING:
    from .settings import Settings

SETTING = "SQSJOBS_SIGNING_KEY"
DEFAULT_KID = "default"
#: HMAC-SHA256 keys shorter than its block of output are guessable sooner than the hash is broken.
MIN_KEY_BYTES = 32
KID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SECRETS_MANAGER = "secretsmanager:"
SSM = "ssm:"
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The keys of one deployment: `current` signs, every key in `keys` verifies."""

    current: str
    keys: Mapping[str, bytes]
    #: SQSJOBS_SIGNING_MAX_AGE: seconds a signed message may be sent after it was dispatched (or due).
    max_age: float | None = None
    #: SQSJOBS_CLOCK_SKEW: how far the dispatcher's clock and SQS's may disagree.
    skew: float = 0.0
    #: SQSJOBS_PAYLOAD_PREFIX: offloaded bodies live at `<prefix><job id>-<8 hex>`.
    object_prefix: str = "sqsjobs/"
    kids: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ConfigurationError(f"{SETTING}: the current key id {self.current!r} is not in the keyring")
        object.__setattr__(self, "kids", tuple(sorted(self.keys)))

    @classmethod
    def of(cls, key: bytes | SigningKeys) -> SigningKeys:
        """Keys as given: a SigningKeys, or one raw key (id `default`; no length rule, for low-level use)."""
        return key if isinstance(key, SigningKeys) else cls(DEFAULT_KID, {DEFAULT_KID: bytes(key)})

    def sign(self, data: dict[str, Any], queue: str | None = None) -> str:
        """The `sig` of an envelope dict (without `sig`) sent to `queue` (default: the envelope's own)."""
        return f"{self.current}:{_mac(self.keys[self.current], self.current, _queue(data, queue), data)}"

    def verify(self, sig: object, data: dict[str, Any], queue: str | None = None) -> None:
        """Raise BadMessageError("signature") unless `sig` is a listed key's signature of `data` for `queue`."""
        if not isinstance(sig, str):
            raise BadMessageError("signature", f"message is not signed but {SETTING} is set; it was not run")
        kid, colon, mac = sig.rpartition(":")
        claimed = data.get("queue")
        if not colon:  # before key ids: a bare HMAC of the envelope, which names its queue
            if not any(_equal(sig, _legacy_mac(key, data)) for key in self.keys.values()):
                raise BadMessageError(
                    "signature", f"message signature does not match {SETTING} (tampered, or another key)"
                )
        elif kid not in self.keys:
            raise BadMessageError(
                "signature",
                f"message is signed with key id {_short(kid)}, which {SETTING} does not list (removed by a "
                f"rotation, or another deployment's key; listed: {', '.join(self.kids)}); it was not run",
            )
        elif not _equal(mac, _mac(self.keys[kid], kid, claimed, data)):
            raise BadMessageError(
                "signature", f"message signature does not match {SETTING} key {kid!r} (tampered, or another key)"
            )
        if queue is not None and claimed != queue:
            raise BadMessageError(
                "signature",
                f"message was signed for queue {_short(claimed)} but received on {queue!r}; a signed message "
                "runs only on the queue it was dispatched to",
            )

    def check_object(self, job_id: str, object_key: str) -> None:
        """A body read from S3 must come from an object of its own job (`<prefix><job id>-<8 hex>`)."""
        if not object_keys.is_own(self.object_prefix, job_id, object_key):
            raise BadMessageError(
                "signature",
                f"signed job {_short(job_id)} was read from S3 object {_short(object_key)}, which is not one of "
                "its own: the pointer was swapped; it was not run",
            )

    def stamp(self, body: str, first_sent: float, now: float) -> str:
        """What a copy re-sent by a worker carries: when the first message with this body was sent to SQS,
        and when this copy was made (so the stamp vouches for this send only, not for a later replay)."""
        first, made = int(first_sent * 1000), int(now * 1000)
        return f"{first}:{made}:{self.current}:{_stamp_mac(self.keys[self.current], self.current, body, first, made)}"

    def first_sent(self, body: str, stamp: str, sent_at: float) -> float | None:
        """The send time a copy's stamp vouches for; None when the stamp is not ours for this body, or was
        made long before this message was sent (a stamped copy replayed later)."""
        parts = stamp.split(":")
        if len(parts) != 4 or not all(p.isascii() and p.isdigit() and len(p) <= 16 for p in parts[:2]):
            return None
        first, made, kid, mac = int(parts[0]), int(parts[1]), parts[2], parts[3]
        if kid not in self.keys or not _equal(mac, _stamp_mac(self.keys[kid], kid, body, first, made)):
            return None
        # The window a captured stamped copy could be replayed in: never longer than the max age itself.
        window = min(self.max_age, _STAMP_SEND_S) if self.max_age is not None else _STAMP_SEND_S
        if abs(sent_at - made / 1000) > self.skew + window:
            return None
        return first / 1000

    def tag(self, fields: Mapping[str, str], body: str) -> str:
        """What a worker writes on a DLQ copy (`sqsjobs.tag`): it vouches that this worker failed this body
        for the reason, job id, source queue and time in `fields`, which anyone with send rights on the DLQ
        could otherwise write (and so have `failed retry --all` re-sign an old replay)."""
        return f"{self.current}:{_tag_mac(self.keys[self.current], self.current, fields, body)}"

    def vouches(self, tag: object, fields: Mapping[str, str], body: str, failed_at: float, sent_at: float) -> bool:
        """Whether `tag` is a listed key's tag of these fields and body, on a copy SQS received when it says
        it failed (a tagged copy captured from the DLQ and sent again later is not vouched for)."""
        if not isinstance(tag, str):
            return False
        kid, colon, mac = tag.partition(":")
        if not colon or kid not in self.keys or not _equal(mac, _tag_mac(self.keys[kid], kid, fields, body)):
            return False
        return abs(sent_at - failed_at) <= self.skew + _STAMP_SEND_S

    def check_age(self, dispatched_at: str, available_at: str | None, sent_at: float | None) -> None:
        """With a max age: refuse a message sent to its queue longer than that after it was dispatched or due.

        `sent_at` is SQS's SentTimestamp of this very message, which no sender can choose: retries of a
        message keep it, delay hops are sent before the job is due, a replay is sent late.
        """
        if self.max_age is None or sent_at is None:
            return
        due = max(parse_iso(dispatched_at), parse_iso(available_at) if available_at else 0.0)
        late = sent_at - due
        if late > self.max_age + self.skew:
            raise BadMessageError(
                "expired_signature",
                f"message dispatched at {dispatched_at}{f' (due {available_at})' if available_at else ''} was "
                f"sent to its queue {late:.0f} s later, over SQSJOBS_SIGNING_MAX_AGE ({self.max_age:g} s): a "
                "replay of an old message, or a job held back longer than the max age; it was not run",
            )


def _queue(data: dict[str, Any], queue: str | None) -> Any:
    return queue if queue is not None else data.get("queue")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _mac(key: bytes, kid: str, queue: Any, data: dict[str, Any]) -> str:
    covered = _canonical({"kid": kid, "queue": queue, "env": data})
    return hmac.new(key, covered, hashlib.sha256).hexdigest()


def _stamp_mac(key: bytes, kid: str, body: str, first: int, made: int) -> str:
    digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
    covered = _canonical({"first_sent": first, "made": made, "kid": kid, "body": digest})
    return hmac.new(key, covered, hashlib.sha256).hexdigest()


def _tag_mac(key: bytes, kid: str, fields: Mapping[str, str], body: str) -> str:
    digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
    covered = _canonical({"dlq": dict(fields), "kid": kid, "body": digest})
    return hmac.new(key, covered, hashlib.sha256).hexdigest()


#: How long after a worker stamps a copy (or tags a DLQ copy) SQS may record sending it (the call, its retries).
_STAMP_SEND_S = 60


def _legacy_mac(key: bytes, data: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(data), hashlib.sha256).hexdigest()


def _equal(given: str, expected: str) -> bool:
    # compare_digest refuses non-ASCII text; such a signature cannot be ours anyway.
    return given.isascii() and hmac.compare_digest(given, expected)


def _short(value: object) -> str:
    return ascii(value)[:80]


# -- where keys come from --------------------------------------------------------------------
def signing_keys(settings: Settings) -> SigningKeys | None:
    """The deployment's keys from its settings (a reference is fetched now, once); None: signing off."""
    secret = settings.signing_key
    if secret is None:
        if settings.signing_max_age is not None:
            raise ConfigurationError(
                "SQSJOBS_SIGNING_MAX_AGE is set but SQSJOBS_SIGNING_KEY is not: an unsigned dispatch time "
                "proves nothing; set a signing key (docs/security.md) or unset the max age"
            )
        return None
    reference = secret.get_secret_value().strip()
    current, keys = parse_keyring(fetch(reference), _source(reference))
    return SigningKeys(
        current,
        keys,
        max_age=settings.signing_max_age,
        skew=settings.clock_skew,
        object_prefix=settings.payload_prefix,
    )


def _source(reference: str) -> str:
    """How an error names the setting: never with a literal key in it."""
    if reference.startswith((SECRETS_MANAGER, SSM)):
        return f"{SETTING}={reference}"
    return SETTING


def fetch(reference: str) -> str:
    """The text a setting names: Secrets Manager or SSM for a reference, else the value itself."""
    if reference.startswith(SECRETS_MANAGER):
        name = reference.removeprefix(SECRETS_MANAGER)
        return _fetched(reference, name, "secretsmanager", "secretsmanager:GetSecretValue", _secret_value)
    if reference.startswith(SSM):
        name = reference.removeprefix(SSM)
        return _fetched(reference, name, "ssm", "ssm:GetParameter", _parameter_value)
    return reference


def _secret_value(client: Any, name: str) -> str:
    found = client.get_secret_value(SecretId=name)
    if "SecretString" in found:
        return str(found["SecretString"])
    return bytes(found["SecretBinary"]).decode()


def _parameter_value(client: Any, name: str) -> str:
    return str(client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])


def _fetched(reference: str, name: str, service: str, action: str, read: Any) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    from . import aws

    if not name.strip():
        raise ConfigurationError(f"{SETTING}={reference!r} names no {service} secret; add its name or ARN")
    try:
        return str(read(aws.client(service), name))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ConfigurationError(
            f"{SETTING}={reference}: could not read it ({error.get('Code', '?')}: {error.get('Message', '')}); "
            f"check that it exists in region {aws.region()} and that this role is allowed {action} on it "
            "and kms:Decrypt on its KMS key"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{SETTING}={reference}: the secret is binary, not UTF-8 text") from exc
    except BotoCoreError as exc:  # no credentials, no endpoint: the CLI reports these as AWS problems
        exc.add_note(f"while reading {SETTING}={reference}")
        raise


def parse_keyring(value: str, source: str = SETTING) -> tuple[str, dict[str, bytes]]:
    """(current kid, {kid: key}) from one key or a JSON keyring; ConfigurationError naming `source`."""
    text = value.strip()
    if not text.startswith("{"):
        keys = {DEFAULT_KID: text.encode()}
        current = DEFAULT_KID
    else:
        try:
            ring = json.loads(text)
        except ValueError:
            raise ConfigurationError(
                f"{source}: the value starts with '{{' but is not JSON; a keyring is "
                '{"current": "<kid>", "<kid>": "<key>", ...}'
            ) from None
        current = ring.get("current")
        keys = {}
        for kid, key in ring.items():
            if kid == "current":
                continue
            if not isinstance(key, str) or not KID_PATTERN.fullmatch(kid):
                raise ConfigurationError(
                    f"{source}: keyring member {_short(kid)} must be a key id ({KID_PATTERN.pattern}) with a string key"
                )
            keys[kid] = key.encode()
        if not isinstance(current, str) or current not in keys:
            raise ConfigurationError(
                f'{source}: the keyring\'s "current" must name one of its keys ({", ".join(sorted(keys)) or "none"})'
            )
    short = sorted(kid for kid, key in keys.items() if len(key) < MIN_KEY_BYTES)
    if short:
        raise ConfigurationError(
            f"{source}: key {', '.join(map(repr, short))} is shorter than {MIN_KEY_BYTES} bytes; "
            "make one with `sqsjobs keys generate`"
        )
    return current, keys


def generate_key() -> str:
    """A new random key: 48 random bytes, URL-safe base64 (64 characters)."""
    import secrets  # the CLI's `keys generate` only

    return secrets.token_urlsafe(48)
