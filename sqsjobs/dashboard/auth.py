"""Who may use the dashboard, and proof that a POST came from its own pages.

- **The gate.** On loopback the dashboard needs nothing (only this machine reaches it). Anywhere else it
  refuses to start without a token (SQSJOBS_DASHBOARD_TOKEN / `--token`) or basic auth
  (SQSJOBS_DASHBOARD_USER + SQSJOBS_DASHBOARD_PASSWORD): its buttons retry, delete and pause. A token is
  typed once into a login form, which sets a session cookie (HttpOnly, SameSite=Strict, signed with a key
  derived from the token: changing the token ends every session); scripts may send `Authorization:
  Bearer <token>`. Every comparison is constant-time.
- **Host names.** Every response but /healthz goes only to a Host header it knows: loopback's names
  (127.0.0.1, localhost, [::1], on any port: a tunnel may forward another one), the address it listens
  on, and SQSJOBS_DASHBOARD_ALLOWED_HOSTS / `--allowed-host` (the name behind a load balancer). DNS
  rebinding points an attacker's own name at 127.0.0.1: the browser then treats our pages as the
  attacker's site (it reads them, CSRF token included, and posts with a matching Origin), but the Host
  header still carries the attacker's name, and that is refused. So is a header that is not exactly a
  name (letters, digits, `-`, `_`, dots) or a bracketed IPv6 address, then an optional `:port`.
- **Fetch metadata.** A request whose `Sec-Fetch-Site` says another site (or a sibling one) sent it is
  refused, GETs too: reading a DLQ hides its messages, and a page elsewhere must not make a browser do it.
  A link from elsewhere gets a page with one link back in (a person's click is then same-origin).
- **CSRF.** Each browser gets a random token in a cookie, and every form carries it in a hidden field;
  a POST whose field does not equal its cookie is refused (403), and so is one whose Origin (or, without
  it, Referer) names another host. The pages send `Referrer-Policy: same-origin`, so a browser sends our
  own origin with our own POSTs and nothing to other sites (with `no-referrer` a browser's POST would
  carry `Origin: null`, which cannot be told from a sandboxed attacker's).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from ..errors import ConfigurationError

SESSION_COOKIE = "sqsjobs_session"
CSRF_COOKIE = "sqsjobs_csrf"
CSRF_FIELD = "csrf"
#: A session lasts a working day; the token is asked for again after it.
SESSION_S = 12 * 3600
#: Paths anyone may reach: the ALB's health check, the login form, the stylesheet and script.
PUBLIC = ("/healthz", "/login", "/static/")


#: What a browser on this machine calls a loopback dashboard (on any port: `ssh -L 9000:127.0.0.1:8484`
#: brings it to another one, and a port in the Host header is no proof of anything a name is not).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: Sec-Fetch-Site values of our own pages' requests, and of a person's (a typed address, a bookmark).
OWN_FETCHES = ("same-origin", "none")
_NAME = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9_-]+(\.[a-z0-9_-]+)*)$")
#: A whole Host header: a name (or a bracketed IPv6 address), an optional trailing dot, an optional port.
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*)\.?(?::[0-9]{1,5})?")
_WILDCARDS = ("0.0.0.0", "[::]", "")


def host_name(header: str) -> str | None:
    """A Host header's name: lowercase, without its port or a trailing dot (`[::1]` keeps its brackets).

    None for anything else: a header parsed loosely (`[::1]evil.example`, `localhost:8484@evil`) passes as
    one name here while a proxy, a log or a browser reads another in it."""
    found = _HOST.fullmatch(header.strip(" \t").lower())
    return found.group(1) if found else None


def _bracketed(name: str) -> str:
    """An IPv6 address as a Host header writes it."""
    if ":" in name and not name.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(name)}]"
        except ValueError:
            return name
    return name


@dataclass(frozen=True)
class Hosts:
    """The Host names the dashboard answers (see the module's docstring: DNS rebinding)."""

    names: frozenset[str]
    #: `.example.com` for an allowed `*.example.com`.
    suffixes: tuple[str, ...] = ()
    #: `*`: any name (only behind a gate: a gate, not the name, is then what keeps strangers out).
    any: bool = False

    @classmethod
    def of(cls, bound: str, allowed: Iterable[str], gate: Gate) -> Hosts:
        names = set(LOOPBACK_NAMES)
        listening = _bracketed(bound.strip().lower())
        if listening not in _WILDCARDS:
            names.add(listening)
        suffixes: list[str] = []
        anything = False
        for raw in allowed:
            value = _bracketed(raw.strip().lower())
            if not value:
                continue
            if value == "*":
                if gate.open:
                    raise ConfigurationError(
                        "--allowed-host / SQSJOBS_DASHBOARD_ALLOWED_HOSTS '*' would answer any host name, so a "
                        "page of any site could reach this dashboard, which has no login, by DNS rebinding: "
                        "name the hosts, or set SQSJOBS_DASHBOARD_TOKEN"
                    )
                anything = True
            elif value.startswith("*.") and _NAME.match(value[2:]):
                suffixes.append(value[1:])
            elif _NAME.match(value):
                names.add(value)
            else:
                raise ConfigurationError(
                    f"--allowed-host / SQSJOBS_DASHBOARD_ALLOWED_HOSTS: {raw.strip()!r} is not a host name; give "
                    "the name browsers use, without scheme or port (dashboard.example.com, *.example.com)"
                )
        return cls(frozenset(names), tuple(suffixes), anything)

    def allows(self, header: str) -> bool:
        name = host_name(header)
        if name is None:
            return False
        return self.any or name in self.names or any(name.endswith(suffix) for suffix in self.suffixes)


def fetched_from_elsewhere(request: Request) -> bool:
    """A browser says another site (or a sibling) made this request: a form, an <img>, a script, a link."""
    site = request.headers.get("sec-fetch-site")
    return site is not None and site.lower() not in OWN_FETCHES


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Gate:
    """The configured way in: a token, basic auth, both, or (loopback only) neither."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    @property
    def open(self) -> bool:
        return not self.token and not self.user

    def require_for(self, host: str) -> None:
        """Refuse to serve `host` (anything but loopback) without a way to tell people apart."""
        if self.open and not is_loopback(host):
            raise ConfigurationError(
                f"the dashboard would listen on {host} with no authentication; set SQSJOBS_DASHBOARD_TOKEN "
                "(or --token; at least 16 characters) or SQSJOBS_DASHBOARD_USER and SQSJOBS_DASHBOARD_PASSWORD, "
                "or listen on 127.0.0.1"
            )

    # -- who is asking ------------------------------------------------------------------------
    def allows(self, request: Request) -> bool:
        if self.open:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if self.user and self.password and scheme.lower() == "basic" and self._basic(credentials.strip()):
            return True
        if self.token and scheme.lower() == "bearer" and _same(credentials.strip(), self.token):
            return True
        return bool(self.token) and self.session_valid(request.cookies.get(SESSION_COOKIE, ""))

    def _basic(self, credentials: str) -> bool:
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        assert self.user is not None and self.password is not None
        # Both compared, always: how long a refusal takes says nothing about which half was wrong.
        return _same(user, self.user) & _same(password, self.password)

    def token_matches(self, candidate: str) -> bool:
        return bool(self.token) and _same(candidate, self.token or "")

    # -- sessions ------------------------------------------------------------------------------
    def _session_key(self) -> bytes:
        return hashlib.sha256(b"sqsjobs-dashboard-session\x00" + (self.token or "").encode()).digest()

    def new_session(self, now: float | None = None) -> str:
        issued = f"{int(now if now is not None else time.time())}.{secrets.token_urlsafe(16)}"
        return f"{issued}.{self._sign(issued)}"

    def session_valid(self, value: str, now: float | None = None) -> bool:
        issued, _, signature = value.rpartition(".")
        if not issued or not _same(signature, self._sign(issued)):
            return False
        started = issued.partition(".")[0]
        moment = now if now is not None else time.time()
        return started.isdigit() and 0 <= moment - int(started) <= SESSION_S

    def _sign(self, issued: str) -> str:
        return hmac.new(self._session_key(), issued.encode(), hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


# -- CSRF ----------------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """This browser's CSRF token: its cookie's, or a new one the response sets (`request.state.new_csrf`)."""
    found = request.cookies.get(CSRF_COOKIE, "")
    if len(found) >= 32:
        return found
    fresh = getattr(request.state, "new_csrf", None)
    if fresh is None:
        fresh = request.state.new_csrf = secrets.token_urlsafe(32)
    return str(fresh)


def csrf_refusal(request: Request, form: dict[str, str]) -> str | None:
    """Why this POST may not act (None: it may): a token that does not match its cookie, or another origin."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if len(cookie) < 32 or not _same(form.get(CSRF_FIELD, ""), cookie):
        return "the form's CSRF token does not match this browser's (reload the page and try again)"
    own = request.headers.get("host", "").lower()
    origin = request.headers.get("origin")
    if origin is not None:
        if origin == "null" or urlsplit(origin).netloc.lower() != own:
            return "the request came from another origin"
    else:
        referer = request.headers.get("referer")
        if referer is not None and urlsplit(referer).netloc.lower() != own:
            return "the request came from another page"
    return None


def secure(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (directly, or through a proxy that says so)."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"
