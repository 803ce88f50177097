"""What every verb shares: building the App from options, reporting errors plainly, printing safely.

Exit codes (docs/cli.md):

- 0: done.
- 1: the verb's own "no": `failed show/forget/retry` found nothing, `check` found an error; for
  `work`, a job that could not be interrupted after its timeout (the worker is wedged: replace it).
- 2: usage or configuration: a bad option or `SQSJOBS_*` value, a jobs module that cannot be
  imported, a busy `sqsjobs local` port, a missing queue or table.
- 3: AWS cannot be reached or used: no credentials, no region, an endpoint that does not answer,
  credentials that AWS refuses.
- 12: `work --memory` limit reached.

Expected failures print one red line saying what to do; `--debug` (or `SQSJOBS_DEBUG=1`) adds the
traceback. Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from botocore import exceptions as botocore_errors
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from .. import aws, logs
from ..app import App, use
from ..errors import ConfigurationError, SqsJobsError

# Piped output (CI logs, `| grep`) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

EXIT_CONFIG = 2
EXIT_AWS = 3
NO_REGION = "no AWS region configured; set AWS_REGION or AWS_DEFAULT_REGION (e.g. us-east-1)"

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app", "-a", help="Module that defines your jobs, e.g. myapp.jobs (SQSJOBS_APP).", show_default=False
    ),
]
QueueOption = Annotated[
    str | None,
    typer.Option("--queue", "-q", help="Queue name(s), comma-separated, highest priority first.", show_default=False),
]

_debug = False


def set_debug(value: bool) -> None:
    global _debug
    _debug = value


def debug_enabled() -> bool:
    return _debug or os.environ.get("SQSJOBS_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def build_app(app_module: str | None, *, needs_aws: bool = True, **overrides: Any) -> App:
    """The App for this command, with the user's jobs imported (from the current directory too).

    With `needs_aws` and the sqs connection, a missing AWS region stops here (exit 3), before a
    verb could report it as something else.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if app_module:
        overrides["app"] = app_module
    app = App(**{k: v for k, v in overrides.items() if v is not None})
    logs.configure(app.settings.log_format, app.settings.log_level)
    try:
        app.load_jobs()
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else "the jobs module"
        raise ConfigurationError(
            f"SQSJOBS_APP={app.settings.app!r}: syntax error in {where}: {exc.msg}; fix the file"
        ) from exc
    if needs_aws and app.settings.connection == "sqs" and not aws.region():
        raise ConfigurationError(NO_REGION)
    use(app)
    return app


def split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


# -- printing what came from a message ---------------------------------------------------------
# C0 controls (ESC starts terminal escape sequences), DEL, C1 controls, bidi overrides/isolates
# (text that reads differently from what it is) and lone surrogates (not printable at all).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def clean(value: object, *, multiline: bool = False) -> str:
    """`value` as text a terminal shows as it is: control characters become visible `\\xNN` escapes.

    Single-line values (ids, names, reasons) also lose newlines and tabs; multi-line ones
    (tracebacks, bodies) keep them.
    """
    return (_UNSAFE if multiline else _UNSAFE_LINE).sub(_visible, str(value))


def safe(value: object, *, multiline: bool = False) -> str:
    """`clean(value)` escaped for rich markup, to embed in a markup string."""
    return escape(clean(value, multiline=multiline))


def text(value: object, *, multiline: bool = False, style: str = "") -> Text:
    """A rich Text of `clean(value)`: never parsed as markup."""
    return Text(clean(value, multiline=multiline), style=style)


# -- errors ----------------------------------------------------------------------------------
_NO_CREDENTIALS = (
    botocore_errors.NoCredentialsError,
    botocore_errors.PartialCredentialsError,
    botocore_errors.CredentialRetrievalError,
    botocore_errors.ProfileNotFound,
    botocore_errors.TokenRetrievalError,
    botocore_errors.SSOTokenLoadError,
    botocore_errors.UnauthorizedSSOTokenError,
)
_REFUSED_CREDENTIALS = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "InvalidSignatureException",
}


def _endpoint() -> str:
    for name in ("AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    return "the AWS endpoint"


def explain(exc: BaseException) -> tuple[str, int] | None:
    """The one line and exit code for an expected failure; None for anything else (a bug)."""
    # sqsjobs.aws raises this one as a ConfigurationError; it is AWS's configuration, not ours.
    if isinstance(exc, ConfigurationError) and str(exc).startswith("no AWS region"):
        return str(exc), EXIT_AWS
    if isinstance(exc, SqsJobsError):
        cause = exc.__cause__  # a DispatchError over missing credentials is AWS's configuration, not ours
        aws = explain(cause) if cause is not None else None
        return aws if aws is not None and aws[1] == EXIT_AWS else (str(exc), EXIT_CONFIG)
    if isinstance(exc, _NO_CREDENTIALS):
        return (
            f"no usable AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, "
            "or for `sqsjobs local` paste the export lines it prints",
            EXIT_AWS,
        )
    if isinstance(exc, botocore_errors.NoRegionError | botocore_errors.InvalidRegionError):
        return f"{exc}; set AWS_REGION or AWS_DEFAULT_REGION (e.g. us-east-1)", EXIT_AWS
    if isinstance(
        exc,
        botocore_errors.EndpointConnectionError
        | botocore_errors.ConnectTimeoutError
        | botocore_errors.ProxyConnectionError,
    ):
        return (
            f"cannot reach AWS ({exc}); is {_endpoint()} right and running (`sqsjobs local`)? "
            "check the network and AWS_ENDPOINT_URL",
            EXIT_AWS,
        )
    if isinstance(exc, botocore_errors.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _REFUSED_CREDENTIALS:
            return f"AWS refused the credentials ({code}); check AWS_ACCESS_KEY_ID / AWS_PROFILE", EXIT_AWS
    return None


@contextmanager
def reported() -> Iterator[None]:
    """Turn expected failures into one red line and a documented exit code, instead of a traceback."""
    try:
        try:
            yield
        finally:
            logs.flush()  # the verb's log lines before its error line, and inside its own output
    except Exception as exc:
        found = explain(exc)
        if found is None:
            raise
        if debug_enabled():
            traceback.print_exception(exc, file=sys.stderr)
        message, code = found
        err_console.print(Text.assemble(("error: ", "bold red"), (clean(message), "red")), soft_wrap=True)
        raise typer.Exit(code) from None


F = TypeVar("F", bound=Callable[..., Any])


def guarded(command: F) -> F:
    """`command` with `reported()` around all of it (typer reads the signature through `__wrapped__`)."""
    if getattr(command, "__sqsjobs_guarded__", False):
        return command

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with reported():
            return command(*args, **kwargs)

    run.__sqsjobs_guarded__ = True  # type: ignore[attr-defined]
    return run  # type: ignore[return-value]


def guard_all(app: typer.Typer) -> None:
    """Put `reported()` around every verb of `app` and of its sub-groups."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = guarded(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_all(group.typer_instance)
