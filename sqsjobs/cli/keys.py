"""`sqsjobs keys ...`: make a signing key, and rotate the keyring in Secrets Manager without stopping workers.

Nothing here prints a key except `generate`, whose job it is: rotation shows key ids only.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer

from .. import aws
from ..errors import ConfigurationError
from ..settings import Settings, load_settings
from ..signing import KID_PATTERN, SECRETS_MANAGER, SETTING, generate_key, parse_keyring
from .common import console, text

group = typer.Typer(
    help="Signing keys: make one, rotate the keyring (docs/security.md).",
    no_args_is_help=True,
    epilog="""[bold]Examples[/]

  sqsjobs keys generate                                  [dim]# a new random key[/]
  sqsjobs keys rotate                                    [dim]# the rotation procedure, step by step[/]
  sqsjobs keys rotate add --secret prod/sqsjobs-signing  [dim]# what `add` would write (key ids only)[/]
  sqsjobs keys rotate add --apply                        [dim]# SQSJOBS_SIGNING_KEY=secretsmanager:... is edited[/]
  sqsjobs keys rotate switch --apply
  sqsjobs keys rotate remove --kid k1 --apply
""",
)

PROCEDURE = """Rotating the signing key without stopping workers (docs/security.md):

  1. add      put a new key id in the secret, next to the current one
              (`sqsjobs keys rotate add --apply`). Then redeploy or restart every worker and every
              dispatcher: keys are read once, at start-up. Every process now verifies both keys,
              and still signs with the old one.
  2. switch   make the new key id "current" (`sqsjobs keys rotate switch --apply`), and redeploy
              again. New messages are signed with the new key; messages already queued, signed
              with the old one, keep verifying because it is still listed.
  3. wait     until no message signed with the old key can still arrive: the queues' retention
              period (MessageRetentionPeriod, at most 14 days), or SQSJOBS_SIGNING_MAX_AGE when it
              is shorter. Retry what is in the DLQs (`sqsjobs failed retry`, which re-signs with the
              current key) before the next step.
  4. remove   take the old key id out (`sqsjobs keys rotate remove --apply`), and redeploy. A message
              still signed with it now goes to the DLQ as `signature`.

Each step without --apply only shows what it would write. --apply needs secretsmanager:GetSecretValue
and secretsmanager:PutSecretValue on the secret. For an SSM parameter, make the same edits with
`aws ssm put-parameter --overwrite`.
"""


@group.command("generate")
def generate(
    kid: Annotated[
        str | None,
        typer.Option("--kid", help="Print a one-key keyring with this key id, ready for a secret.", show_default=False),
    ] = None,
) -> None:
    """Print a new random signing key (48 random bytes, URL-safe base64)."""
    key = generate_key()
    if kid is None:
        typer.echo(key)
        return
    _check_kid(kid)
    typer.echo(json.dumps({"current": kid, kid: key}))


@group.command("rotate")
def rotate(
    step: Annotated[
        str | None,
        typer.Argument(help="add, switch or remove; none prints the whole procedure.", show_default=False),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            help="Secrets Manager secret name or ARN (default: SQSJOBS_SIGNING_KEY=secretsmanager:...).",
            show_default=False,
        ),
    ] = None,
    kid: Annotated[
        str | None,
        typer.Option(
            "--kid", help="The key id to add, switch to or remove (default: chosen for you).", show_default=False
        ),
    ] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Write the secret (PutSecretValue).")] = False,
) -> None:
    """Rotate the signing keyring: print the procedure, or do one step of it on a Secrets Manager secret."""
    if step is None:
        console.print(text(PROCEDURE, multiline=True))
        return
    if step not in ("add", "switch", "remove"):
        raise ConfigurationError(f"unknown step {step!r}; `sqsjobs keys rotate` takes add, switch or remove")
    settings = load_settings()  # a wrong SQSJOBS_* value stops here, as on every verb
    secret_id = secret or _secret_from_setting(settings)
    client = aws.client("secretsmanager")
    found = client.get_secret_value(SecretId=secret_id)
    before = keyring(str(found.get("SecretString", "")), secret_id)
    after, done = plan(before, step, kid)
    console.print(text(f"{secret_id}: {describe(before)}"))
    console.print(text(f"{step}: {done} -> {describe(after)}"))
    if not apply:
        console.print(text("Nothing written: add --apply to write it."))
        return
    client.put_secret_value(SecretId=secret_id, SecretString=json.dumps(after))
    console.print(
        text("Written. Redeploy or restart every worker and dispatcher: they read the keys once, at start-up.")
    )


def _secret_from_setting(settings: Settings) -> str:
    key = settings.signing_key
    value = key.get_secret_value().strip() if key is not None else ""
    if not value.startswith(SECRETS_MANAGER):
        raise ConfigurationError(
            f"`keys rotate add|switch|remove` edits a Secrets Manager secret: pass --secret, or set {SETTING}="
            "secretsmanager:<name or ARN> (for a literal key or an SSM parameter, follow `sqsjobs keys rotate`)"
        )
    return value.removeprefix(SECRETS_MANAGER)


def keyring(value: str, source: str) -> dict[str, str]:
    """A secret's value as a keyring dict; one plain key becomes {"current": "default", "default": key}."""
    current, keys = parse_keyring(value, f"secret {source}")
    return {"current": current, **{kid: key.decode() for kid, key in keys.items()}}


def describe(ring: dict[str, str]) -> str:
    kids = sorted(k for k in ring if k != "current")
    return f"keys {', '.join(kids)}; current {ring['current']}"


def plan(ring: dict[str, str], step: str, kid: str | None) -> tuple[dict[str, str], str]:
    """The keyring after one rotation step, and what the step did (key ids only)."""
    current = ring["current"]
    others = sorted(k for k in ring if k not in ("current", current))
    after = dict(ring)
    if step == "add":
        new = kid or _next_kid(ring)
        _check_kid(new)
        if new in ring:
            raise ConfigurationError(f"key id {new!r} is already in the keyring; pick another with --kid")
        after[new] = generate_key()
        return after, f"added key {new} (current is still {current})"
    chosen = kid or _only(others, step)
    if chosen not in ring or chosen == "current":
        raise ConfigurationError(f"key id {chosen!r} is not in the keyring ({describe(ring)})")
    if step == "switch":
        after["current"] = chosen
        return after, f"current {current} -> {chosen}"
    if chosen == current:
        raise ConfigurationError(f"key id {chosen!r} is current: switch to another key before removing it")
    del after[chosen]
    return after, f"removed key {chosen}"


def _only(others: list[str], step: str) -> str:
    if len(others) != 1:
        listed = ", ".join(others) or "none"
        raise ConfigurationError(f"which key to {step}? the keyring has other key ids: {listed}; pass --kid")
    return others[0]


def _next_kid(ring: dict[str, Any]) -> str:
    numbers = [int(m.group(1)) for k in ring if (m := re.fullmatch(r"k(\d+)", k))]
    return f"k{max(numbers, default=0) + 1}"


def _check_kid(kid: str) -> None:
    if kid == "current" or not KID_PATTERN.fullmatch(kid):
        raise ConfigurationError(f"key id {kid!r} must match {KID_PATTERN.pattern} and not be 'current'")
