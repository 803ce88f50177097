"""All of sqsjobs' own configuration, read from `SQSJOBS_*` variables or given in code.

AWS configuration (credentials, region, endpoints) is deliberately not here:
boto3's own chain reads it, including `AWS_ENDPOINT_URL` and
`AWS_ENDPOINT_URL_<SERVICE>`, so sqsjobs behaves like every other AWS tool.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator

from .errors import ConfigurationError

ConnectionName = Literal["sqs", "sync", "memory", "null"]
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


#: Where every setting is read from: `SQSJOBS_<FIELD>`, in any case.
ENV_PREFIX = "SQSJOBS_"


class Settings(BaseModel):
    """sqsjobs settings; every field maps to `SQSJOBS_<FIELD>`.

    Parameters:
        app: module that defines (and so registers) the job classes, e.g. `myapp.jobs`.
        connection: `sqs` in production, `memory` or `sync` in tests, `null` to drop everything.
        queues: logical queue names (`high,default`) or a JSON map name -> queue URL or
            physical name. Names not mapped resolve to `queue_prefix + name + queue_suffix`.
        default_queue: where a job goes when neither the job nor the dispatch names a queue.
        signing_key: when set, every message is signed (HMAC-SHA256) and unsigned or
            tampered messages are failed to the DLQ instead of run (docs/security.md).
        signing_max_age: seconds a signed message stays valid after its dispatch; older ones go
            to the DLQ as `expired_signature` (replays of old messages). None: no limit.
        kms_key: the KMS key (id, ARN or `alias/...`) that encrypts the payloads of encrypted jobs
            (`encrypted = True`); without it, dispatching one is an error, never plain text.
        bucket: the S3 bucket for payloads over `payload_threshold` (and nothing else).
        payload_prefix: the key prefix of those objects; a pointer outside bucket + prefix is
            never read or deleted (`foreign_pointer`).
        payload_max_bytes: the largest offloaded body a worker reads; a larger object is never
            read whole (`payload_too_large`).
        payload_threshold: bodies larger than this many bytes travel through S3 in the
            Amazon SQS Extended Client format; `always` sends every body through S3.
        store: where coordination state lives; `auto` is DynamoDB (`table`) on the sqs
            connection and memory otherwise.
        max_delay_hop: the longest single `DelaySeconds` used; longer delays travel in hops.
            900 is the SQS maximum; lower it only to test hops quickly.
        tries: attempts for jobs that do not set `tries` (never unlimited).
        timeout: seconds a job may run when it does not set `timeout` (poller-enforced).
        lambda_deadline_margin: seconds kept free at the end of a Lambda invocation: a record
            is not started unless its job's timeout plus this margin still fits.
        lambda_fifo_skip_group: on FIFO queues, a failed record holds back only the rest of
            its own message group (not the whole batch).
        dlq_suffix: name suffix of the dead-letter queues that `provision` creates.
        max_receive_count: redrive `maxReceiveCount` that `provision` sets (raised to
            exceed the largest `tries` of the jobs it knows).
        visibility_timeout: visibility timeout `provision` sets; the poller heartbeats
            long jobs, so this need not cover the longest job.
        clock_skew: seconds by which workers' clocks may disagree; locks, claims and windows
            held by another worker are trusted for this much longer than their own expiry says.
        metrics: per-job metrics from workers and the Lambda handler (docs/metrics.md): `off`,
            `emf` (CloudWatch embedded metric format on stdout: Lambda, ECS with awslogs) or
            `cloudwatch` (batched PutMetricData, where no log agent reads EMF). On Lambda,
            POWERTOOLS_METRICS_NAMESPACE alone turns `emf` on.
        metrics_namespace: the CloudWatch namespace (POWERTOOLS_METRICS_NAMESPACE wins on Lambda).
        metrics_interval: seconds between a worker's metric flushes (and `worker_alive` beats).
        pools: worker pools as a JSON object (`sqsjobs work` runs them when given no --queue;
            docs/worker.md): `{"high": {"queues": ["high"], "concurrency": 10, "timeout": 30}}`.
        job_log: keep a compact record of every job in the table (status by id, cancel, tags;
            docs/job-log.md): one PutItem per dispatch (and per tag), two UpdateItems per run.
        job_log_ttl: seconds a job log record lives (default 7 days).
        worker_beat: seconds between a worker's beats in the table (`sqsjobs workers`) and its
            reads of `restart` / `pause` (docs/operations.md); 0 turns both off.
        after_commit: inside a database transaction an integration watches (SQLAlchemy, Django), hold
            every dispatch until it commits and drop it if it rolls back, unless the dispatch says
            `after_commit=False` (docs/after-commit.md). Outside a transaction, dispatches are sent at once.
        snapshots: per-queue, per-minute job counters in the table for `sqsjobs dashboard`'s charts
            (docs/dashboard.md): one UpdateItem per queue and minute per poller, and per queue at the end
            of each Lambda invocation. Written only where the store is the DynamoDB table.
        dashboard_token: the token `sqsjobs dashboard` asks for (a login form, or `Authorization: Bearer`);
            needed, or basic auth, when it listens on anything but loopback. At least 16 characters.
        dashboard_user, dashboard_password: basic auth for `sqsjobs dashboard` instead (both, or neither).
        dashboard_allowed_hosts: comma-separated host names `sqsjobs dashboard` answers besides loopback's
            and the one it listens on (the name browsers use behind a load balancer; `*.example.com`).
    """

    model_config = ConfigDict(extra="ignore", validate_default=True)

    def __init__(self, **values: Any) -> None:
        """Values given in code win over `SQSJOBS_*` variables, which win over the defaults.

        The environment is read here rather than through pydantic-settings, whose import alone costs
        every Lambda cold start ~35 ms: each variable is handed to the field as the text it is, and the
        field's own type and validators parse it (`3`, `true`, `0.5`, `a,b` or a JSON object for queues).
        """
        super().__init__(**{**_from_environment(type(self)), **_by_field(type(self), values)})

    app: str | None = None
    connection: ConnectionName = "sqs"
    queues: dict[str, str] = Field(default_factory=lambda: {"default": "default"})
    queue_prefix: str = ""
    queue_suffix: str = ""
    default_queue: str = "default"
    signing_key: SecretStr | None = None
    signing_max_age: float | None = Field(default=None, gt=0)
    kms_key: str | None = None
    store: Literal["auto", "dynamodb", "memory"] = "auto"
    table: str = "sqsjobs"
    bucket: str = "sqsjobs-payloads"
    payload_prefix: str = "sqsjobs/"
    payload_max_bytes: int = Field(default=64 * 1_048_576, ge=1_048_576)
    #: 1 MiB minus 16 KiB kept for attributes (a DLQ copy adds the failure reason).
    payload_threshold: Annotated[int, Field(ge=0, le=1_032_192)] | Literal["always"] = 1_032_192
    tries: int = Field(default=3, ge=1, le=1000)
    timeout: float = Field(default=60, gt=0, le=43200)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    max_delay_hop: int = Field(default=900, ge=1, le=900)
    lambda_deadline_margin: float = Field(default=2.0, ge=0)
    lambda_fifo_skip_group: bool = False
    dlq_suffix: str = "-dlq"
    max_receive_count: int = Field(default=10, ge=2, le=1000)
    visibility_timeout: int = Field(default=60, ge=5, le=43200)
    clock_skew: float = Field(default=60.0, ge=0, le=3600)
    metrics: Literal["off", "emf", "cloudwatch"] = "off"
    metrics_namespace: str = Field(default="sqsjobs", min_length=1, max_length=255)
    metrics_interval: float = Field(default=60.0, ge=1, le=3600)
    worker_beat: float = Field(default=10.0, ge=0, le=600)
    pools: str | None = None
    job_log: bool = False
    job_log_ttl: float = Field(default=7 * 86400, ge=60, le=366 * 86400)
    after_commit: bool = False
    snapshots: bool = True
    dashboard_token: SecretStr | None = None
    dashboard_user: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^:]+$")
    dashboard_password: SecretStr | None = Field(default=None, validate_default=True)
    dashboard_allowed_hosts: str = ""

    @field_validator("dashboard_token")
    @classmethod
    def _check_dashboard_token(cls, value: SecretStr | None) -> SecretStr | None:
        """A token is a password anyone who reaches the port may guess: short ones are refused."""
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the token must be at least 16 characters (e.g. `openssl rand -hex 24`)")
        return value

    @field_validator("dashboard_password")
    @classmethod
    def _check_dashboard_basic_auth(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """Basic auth takes both: a user without a password (or the reverse) would be no gate at all."""
        if (info.data.get("dashboard_user") is None) != (value is None):
            raise ValueError(
                "set both SQSJOBS_DASHBOARD_USER and SQSJOBS_DASHBOARD_PASSWORD for basic auth, or neither"
            )
        if value is not None and len(value.get_secret_value()) < 12:
            raise ValueError("the password must be at least 12 characters")
        return value

    @field_validator("payload_prefix")
    @classmethod
    def _check_payload_prefix(cls, value: str) -> str:
        """A folder (`sqsjobs/`) or the whole bucket (empty): `sqsjobs` alone would also own `sqsjobs-backups/`."""
        if value and not value.endswith("/"):
            raise ValueError(f"{value!r} must end with '/' (a folder of the bucket), or be empty for the whole bucket")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _parse_log_level(cls, value: Any) -> Any:
        """A `logging` level name, any case (`debug`, `INFO`, ...); anything else fails at start-up."""
        if isinstance(value, str):
            name = value.strip().upper()
            if name not in _LOG_LEVELS:
                raise ValueError(f"{value!r} is not a log level; use one of {', '.join(_LOG_LEVELS)}")
            return name
        return value

    @field_validator("queues", mode="before")
    @classmethod
    def _parse_queues(cls, value: Any) -> Any:
        """Accept `high,default`, a JSON object or list, a list, or a dict."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return {str(name): str(name) for name in value}
        return value

    def physical_queue_name(self, name: str) -> str:
        """The SQS queue name (or URL) a logical queue name stands for."""
        target = self.queues.get(name, name)
        if target.startswith(("https://", "http://")):
            return target
        fifo = target.endswith(".fifo")
        base = target[: -len(".fifo")] if fifo else target
        return f"{self.queue_prefix}{base}{self.queue_suffix}" + (".fifo" if fifo else "")

    def logical_queue_name(self, physical_name: str) -> str:
        """The logical name for an SQS queue name (the inverse of `physical_queue_name`)."""
        for logical, target in self.queues.items():
            if (
                target.rstrip("/").rsplit("/", 1)[-1] == physical_name
                or self.physical_queue_name(logical) == physical_name
            ):
                return logical
        fifo = physical_name.endswith(".fifo")
        base = physical_name[: -len(".fifo")] if fifo else physical_name
        if self.queue_prefix and base.startswith(self.queue_prefix):
            base = base[len(self.queue_prefix) :]
        if self.queue_suffix and base.endswith(self.queue_suffix):
            base = base[: -len(self.queue_suffix)]
        return base + (".fifo" if fifo else "")

    def dlq_name(self, physical_name: str) -> str:
        """The dead-letter queue name `provision` pairs with a queue."""
        if physical_name.endswith(".fifo"):
            return physical_name[: -len(".fifo")] + self.dlq_suffix + ".fifo"
        return physical_name + self.dlq_suffix


def _by_field(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """Values given in code, keyed by field name whatever their case (as the variables are)."""
    fields = model.model_fields
    return {key if key in fields else key.lower(): value for key, value in values.items()}


def _from_environment(model: type[BaseModel]) -> dict[str, str]:
    """`SQSJOBS_<FIELD>` for each field, matched without regard to case (as AWS's own variables are not,
    but as this project always read its own)."""
    names = {name.lower() for name in model.model_fields}
    found: dict[str, str] = {}
    for key, text in os.environ.items():
        lowered = key.lower()
        if lowered.startswith("sqsjobs_") and (name := lowered[len(ENV_PREFIX) :]) in names:
            found[name] = text
    return found


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, turning validation errors into a named ConfigurationError."""
    return _named_errors(lambda: Settings(**overrides))


def settings_with(settings: Settings, **overrides: Any) -> Settings:
    """`settings` with some values replaced, validated as the environment's are (not re-read)."""
    model = type(settings)
    merged = {**settings.model_dump(), **_by_field(model, overrides)}
    return _named_errors(lambda: model.model_validate(merged))


def _named_errors(build: Callable[[], Settings]) -> Settings:
    try:
        return build()
    except ValidationError as exc:
        # loc[0] is the field; deeper parts name union branches, which mean nothing to a reader.
        problems = "; ".join(
            f"SQSJOBS_{str(err['loc'][0]).upper()}: {err['msg'].removeprefix('Value error, ')}" for err in exc.errors()
        )
        raise ConfigurationError(f"invalid sqsjobs settings — {problems}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"SQSJOBS_QUEUES is not valid JSON ({exc}); use `a,b`, a JSON object or a JSON list"
        ) from exc
