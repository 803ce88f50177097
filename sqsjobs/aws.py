"""boto3 clients built from the standard AWS configuration, one per service per process.

Credentials, endpoints (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS`, ...) and the
region come from boto3's own chain; we only add `AWS_REGION` (which Lambda
sets) as a region source and a read timeout longer than a 20 s long poll.
Retries are botocore's standard mode with 5 attempts unless `AWS_MAX_ATTEMPTS` /
`AWS_RETRY_MODE` say otherwise (an explicit client config would hide them).
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import boto3
import botocore.handlers
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import DataNotFoundError
from botocore.loaders import JSONFileLoader, Loader, instance_cache

from .errors import ConfigurationError

_lock = threading.Lock()
_clients: dict[tuple[str, str | None], Any] = {}
_loaders: dict[str | None, Any] = {}


def _session() -> boto3.session.Session:
    """The process's boto3 session for sqsjobs' clients (not aiobotocore's), made once; callers hold `_lock`.

    Making a session registers botocore's ~140 handlers, each checked with `inspect` (~10 ms), and a
    worker used to make one for each client it builds after it started (DynamoDB, the heartbeat's, the
    snapshots'), all of it CPU on the worker's clock. Clients of one session are as independent as
    clients of several: each has its own config, connection pool and event emitter. What they share:
    botocore's data loader (endpoint rules and service models, ~50 ms a client to read otherwise) and
    the credentials, resolved once for the session. Refreshable credentials (an instance or task role,
    web identity, SSO, an assumed role) refresh in place; static ones changed in the environment while
    the process runs are seen after `reset_clients()`, as the cached clients already required. botocore
    itself makes STS and SSO clients from the session when it refreshes such credentials, outside our lock;
    it allows that.

    A new session is made when what a session takes at birth has changed: botocore's list of builtin
    handlers (the strict test layer and the fault injector add to it) or `AWS_DATA_PATH`.
    """
    global _shared
    assert _lock.locked(), "sqsjobs.aws._session() is called with _lock held"
    handlers = tuple(botocore.handlers.BUILTIN_HANDLERS)
    shared = _shared
    if (
        shared is not None
        and shared.handlers == handlers
        and shared.core.get_config_variable("data_path") == shared.data_path
    ):
        return shared.session
    core = botocore.session.get_session()
    data_path = core.get_config_variable("data_path")
    loader = _shared_loader(core)
    made = boto3.session.Session(botocore_session=core)
    # Each boto3 session appends boto3's own data folder to the loader's search path: keep it once.
    loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))
    _shared = _Shared(handlers, data_path, core, made)
    return made


def _shared_loader(session: botocore.session.Session) -> Loader:
    """Give `session` the process's data loader for its `data_path`; callers hold `_lock`. botocore builds
    each session's loader from `data_path` (AWS_DATA_PATH or the config file): one shared loader per
    value, so models a user adds there still reach our clients."""
    data_path = session.get_config_variable("data_path")
    loader = _loaders.get(data_path)
    if loader is None:
        loader = _loaders[data_path] = _loader(data_path)
    session.register_component("data_loader", loader)
    return loader


def share_loader(session: botocore.session.Session) -> None:
    """Let another botocore session (aiobotocore's, for dispatching from async code) read models through
    the same loader as sqsjobs' clients: each model read once per process, without listing every service
    or an OrderedDict per JSON object. Its first client went from ~50 to ~20 ms."""
    with _lock:
        _shared_loader(session)


class _PlainJSONFiles(JSONFileLoader):
    """botocore's model files read into plain dicts. botocore reads them with an OrderedDict for every
    JSON object, which makes endpoints.json (1.25 MB, read for the first client of every process) and
    each service model about twice as slow to read, for nothing since dicts keep their order: botocore
    builds its own OrderedDicts where it wants them (its start-up JSON was boto/botocore#2553, closed
    unchanged). Counted by callgrind, the first SQS client of a process (a Lambda init, a worker's start)
    went from 256 to 186 million instructions, and a Lambda cold start from 1,348 to 1,293 million."""

    def load_file(self, file_path: str) -> Any:
        for extension, opener in _json_openers():
            path = file_path + extension
            if os.path.isfile(path):
                with opener(path, "rb") as file:
                    data = json.loads(file.read().decode("utf-8"))
                if data is not None:  # as botocore: a file that holds `null` lets the next one speak
                    return data
        return None


def _json_openers() -> Any:
    """The extensions botocore looks for, in its order, as its own `exists()` does (a private table of
    its loader's: without it, the two it has always had)."""
    return getattr(botocore.loaders, "_JSON_OPEN_METHODS", {".json": open, ".json.gz": gzip.open}).items()


class _DirectLoader(Loader):
    """botocore's loader, except that a model found where botocore looks for it is loaded without first
    listing every service botocore knows. That listing (a directory read for each of ~440 services and a
    stat for each of their API versions, once per model type: twice for each client's first build) only
    serves the error for a service that does not exist, and it is a third of what building the first
    client costs, in a Lambda function's init and a worker's start alike. botocore may stop doing it
    itself (boto/botocore#3687). A service not found, or a botocore whose loader no longer looks like
    this one, goes botocore's own way, with its own UnknownServiceError."""

    FILE_LOADER_CLASS = _PlainJSONFiles

    @instance_cache
    def load_service_model(self, service_name: str, type_name: str, api_version: str | None = None) -> Any:
        # botocore's own steps, private to its loader: if they ever move, botocore's whole method runs.
        find_extras = getattr(self, "_find_extras", None)
        extras_processor = getattr(self, "_extras_processor", None)
        if find_extras is None or extras_processor is None:
            return super().load_service_model(service_name, type_name, api_version)
        try:
            version = api_version if api_version is not None else self.determine_latest_version(service_name, type_name)
            model = self.load_data(os.path.join(service_name, version, type_name))
        except DataNotFoundError:  # an unknown service (or type): botocore's error, naming the known ones
            return super().load_service_model(service_name, type_name, api_version)
        extras_processor.process(model, find_extras(service_name, type_name, version))
        return model


def _loader(search_path_string: str | None) -> Loader:
    """botocore's `create_loader`, making a _DirectLoader."""
    if search_path_string is None:
        return _DirectLoader()
    paths = [os.path.expanduser(os.path.expandvars(path)) for path in search_path_string.split(os.pathsep)]
    return _DirectLoader(extra_search_paths=paths)


class _Shared(NamedTuple):
    handlers: tuple[Any, ...]
    data_path: str | None
    core: botocore.session.Session
    session: boto3.session.Session


_shared: _Shared | None = None


def region() -> str | None:
    found = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if found:
        return found
    # The config file's: read once (a botocore session to read it costs ~10 ms, and this runs on every
    # `client()` call); `reset_clients()` reads it again.
    global _file_region
    if _file_region is _UNREAD:
        _file_region = botocore.session.get_session().get_config_variable("region")
    return _file_region if isinstance(_file_region, str) else None


_UNREAD = object()
_file_region: object = _UNREAD


def client(service: str) -> Any:
    """A shared, thread-safe client for `service` (boto3 clients may be used across threads)."""
    return _cached(service, "", _config)


def _config(region_name: str) -> Config:
    # `total_max_attempts` counts the first call too, as AWS_MAX_ATTEMPTS does (botocore's
    # `max_attempts` would count only retries: one attempt more than asked for).
    retries: Any = {"mode": retry_mode(), "total_max_attempts": max_attempts()}
    return Config(
        region_name=region_name,
        retries=retries,
        read_timeout=35,
        connect_timeout=5,
        max_pool_connections=64,
        parameter_validation=PARAMETER_VALIDATION,
    )


#: `quick_client`'s limits in seconds (connect, read): with one attempt, a call ends within their sum.
QUICK_TIMEOUTS = (1.0, 1.0)


def quick_client(service: str) -> Any:
    """A client that tries once and gives up within QUICK_TIMEOUTS, for writes worth less than the time
    they could cost (the dashboard's snapshots at the end of a Lambda invocation); cached like `client`."""
    return _cached(service, "#quick", _quick_config)


def _quick_config(region_name: str) -> Config:
    return Config(
        region_name=region_name,
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=QUICK_TIMEOUTS[0],
        read_timeout=QUICK_TIMEOUTS[1],
        parameter_validation=PARAMETER_VALIDATION,
    )


def new_client(service: str, config: Config) -> Any:
    """A client of its own (not cached), from the shared session."""
    with _lock:
        made = _session().client(service, config=config)  # type: ignore[call-overload]
    cache_user_agent(made)
    return made


def _cached(service: str, flavour: str, config: Callable[[str], Config]) -> Any:
    """One client per service, flavour and region, made once under the lock."""
    key = (service + flavour, region())
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            if key[1] is None:
                raise ConfigurationError(
                    "no AWS region configured; set AWS_REGION or AWS_DEFAULT_REGION (e.g. us-east-1)"
                )
            found = _session().client(service, config=config(key[1]))  # type: ignore[call-overload]
            cache_user_agent(found)
            _clients[key] = found
        return found


#: botocore checks every call's parameters against the service model before sending it. Ours are
#: typed (mypy strict with boto3-stubs) and checked where they come from users (sizes, names, attributes),
#: so the check only spends CPU (2-4% of a call's client time, docs/performance.md). The strict test layer
#: (sqsjobs.testing.aws_rules) runs the same validation in tests, so a wrong parameter still fails there.
PARAMETER_VALIDATION = False


def cache_user_agent(client: Any) -> None:
    """Build the client's User-Agent once, not twice per call (~9% of a call's client CPU).

    botocore rebuilds it on every request to include per-request feature ids, which are AWS's own
    telemetry; the header stays a valid botocore User-Agent (the client's first one). Should botocore
    rename the private creator this reaches for, the client is left as it is.
    """
    creator = getattr(client, "_user_agent_creator", None)
    build = getattr(creator, "to_string", None)
    if creator is None or not callable(build):
        return
    try:
        text = build()
    except Exception:
        return
    if isinstance(text, str):
        creator.to_string = lambda: text


def max_attempts() -> int:
    """AWS_MAX_ATTEMPTS, the standard setting every AWS SDK reads (our default: 5)."""
    text = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not text:
        return 5
    if not text.isdigit() or int(text) < 1:
        raise ConfigurationError(f"AWS_MAX_ATTEMPTS must be a whole number of attempts >= 1, got {text!r}")
    return int(text)


def retry_mode() -> str:
    """AWS_RETRY_MODE (`standard`, `adaptive` or `legacy`; our default: standard)."""
    mode = os.environ.get("AWS_RETRY_MODE", "").strip() or "standard"
    if mode not in ("standard", "adaptive", "legacy"):
        raise ConfigurationError(f"AWS_RETRY_MODE must be standard, adaptive or legacy, got {mode!r}")
    return mode


def reset_clients() -> None:
    """Forget cached clients and the session they came from (tests switch endpoints and credentials)."""
    global _file_region, _shared
    with _lock:
        _clients.clear()
        _shared = None
        _file_region = _UNREAD
