"""botocore knobs that make each AWS call cheaper (issue 13): what was kept, and that tests stay strict.

Measured on one moto server, client CPU per SQS call (docs/performance.md): the User-Agent built once
per client instead of twice per call saves ~9%, skipping botocore's parameter validation 2-4%.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.handlers
import botocore.session
import pytest
from botocore import useragent
from botocore.config import Config
from botocore.exceptions import ParamValidationError

from sqsjobs import App, aws
from tests.helpers import queue_url


def test_production_clients_skip_botocores_parameter_validation(moto: None) -> None:
    """botocore wraps the serializer of a validating client; ours is the bare one."""
    assert aws.PARAMETER_VALIDATION is False
    assert type(aws.client("sqs")._serializer).__name__ != "ParamValidationDecorator"


def test_the_strict_test_layer_still_validates_parameters(sqs_app: App) -> None:
    """The same check botocore would have made, made by the test layer: a wrong type never reaches moto."""
    with pytest.raises(ParamValidationError, match="MessageBody"):
        aws.client("sqs").send_message(QueueUrl=queue_url(sqs_app, "default"), MessageBody=123)
    with pytest.raises(ParamValidationError, match="QueueUrl"):
        aws.client("sqs").receive_message(MaxNumberOfMessages=1)


def test_the_user_agent_is_built_once_per_client_and_stays_botocores(
    sqs_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = aws.client("sqs")
    agents: list[str] = []
    built = 0
    build = useragent.UserAgentString.to_string

    def counting(self: Any) -> str:
        nonlocal built
        built += 1
        return str(build(self))

    monkeypatch.setattr(useragent.UserAgentString, "to_string", counting)
    sqs.meta.events.register("before-send.sqs", lambda request, **_: agents.append(request.headers["User-Agent"]))
    for _ in range(3):
        sqs.get_queue_attributes(QueueUrl=queue_url(sqs_app, "default"), AttributeNames=["All"])
    assert len(agents) >= 3 and len(set(agents)) == 1
    assert (agents[0].decode() if isinstance(agents[0], bytes) else agents[0]).startswith("Boto3/")
    assert built == 0, "built when the client was made, never again"


def test_a_client_without_the_private_creator_is_left_alone() -> None:
    class Other:
        pass

    aws.cache_user_agent(Other())  # no attribute to reach: nothing happens, nothing raises


@pytest.fixture
def sessions_made(monkeypatch: pytest.MonkeyPatch) -> list[botocore.session.Session]:
    """Every botocore session made from here on."""
    made: list[botocore.session.Session] = []
    real = botocore.session.get_session

    def counting() -> botocore.session.Session:
        made.append(real())
        return made[-1]

    monkeypatch.setattr(botocore.session, "get_session", counting)
    return made


def test_a_workers_later_clients_come_from_one_session(
    moto: None, sessions_made: list[botocore.session.Session]
) -> None:
    """A session registers botocore's ~140 handlers (~10 ms); a worker builds its DynamoDB, heartbeat and
    snapshot clients after it has started, on its own clock."""
    aws.reset_clients()
    aws.client("sqs")
    aws.client("dynamodb")
    aws.quick_client("dynamodb")
    aws.new_client("sqs", Config(region_name="us-east-1"))
    assert len(sessions_made) == 1


def test_a_handler_added_to_botocores_builtins_reaches_clients_made_after_it(moto: None) -> None:
    """The strict test layer and the fault injector add to BUILTIN_HANDLERS, which a session takes when it
    is made: a client made after such a change must come from a new session that has them."""
    seen: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append("called")

    aws.reset_clients()
    aws.client("dynamodb")  # the shared session exists before the handler is added
    spec = ("before-parameter-build.sqs.ListQueues", record)
    botocore.handlers.BUILTIN_HANDLERS.append(spec)
    try:
        aws.client("sqs").list_queues()
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(spec)
        aws.reset_clients()
    assert seen == ["called"]


def test_a_region_from_the_config_file_is_read_once(
    moto: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sessions_made: list[botocore.session.Session]
) -> None:
    """Without AWS_REGION/AWS_DEFAULT_REGION every `client()` call asked a new botocore session for the
    config file's region (~10 ms each, a snapshot write made one)."""
    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-west-1\n")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    aws.reset_clients()
    for _ in range(3):
        assert aws.client("sqs").meta.region_name == "eu-west-1"
        aws.quick_client("dynamodb")
    assert len(sessions_made) == 2  # the region, read once, and the shared session
    aws.reset_clients()


def test_credentials_changed_in_the_environment_are_used_after_reset_clients(
    moto: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "FIRSTKEY")
    aws.reset_clients()
    assert aws.client("sqs")._request_signer._credentials.access_key == "FIRSTKEY"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ROTATEDKEY")
    aws.reset_clients()
    assert aws.client("sqs")._request_signer._credentials.access_key == "ROTATEDKEY"
    aws.reset_clients()


# -- building a client -------------------------------------------------------------------------------


@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A loader that has read nothing yet (the shared one keeps every model it has loaded)."""
    monkeypatch.setattr(aws, "_loaders", {})
    aws.reset_clients()
    yield
    aws.reset_clients()


def test_building_a_client_does_not_list_every_service_botocore_knows(
    fresh_loader: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing (a directory read per service botocore ships, per model type) only serves the error
    for an unknown service; building a known service's client never needs it (Lambda init, worker start)."""
    from botocore.loaders import Loader

    def refuse(self: Loader, type_name: str) -> list[str]:
        raise AssertionError(f"every service was listed to build a client ({type_name})")

    monkeypatch.setattr(Loader, "list_available_services", refuse)
    for service in ("sqs", "dynamodb", "s3", "kms"):
        made = aws.new_client(service, Config(region_name="us-east-1"))
        assert made.meta.service_model.service_name == service
    assert aws.new_client("sqs", Config(region_name="eu-west-1")).meta.service_model.api_version == "2012-11-05"


def test_an_unknown_service_still_gets_botocores_own_error(fresh_loader: None) -> None:
    with pytest.raises(botocore.exceptions.UnknownServiceError, match=r"Valid service names are: .*sqs"):
        aws.new_client("sqsjobs-no-such-service", Config(region_name="us-east-1"))


@pytest.mark.parametrize(("service", "kind"), [("s3", "service-2"), ("sqs", "service-2"), ("s3", "paginators-1")])
def test_the_models_loaded_are_botocores_own_extras_included(service: str, kind: str) -> None:
    from botocore.loaders import Loader

    assert aws._DirectLoader().load_service_model(service, kind) == Loader().load_service_model(service, kind)


@pytest.mark.parametrize(
    "name", ["endpoints", "partitions", "_retry", "sqs/2012-11-05/endpoint-rule-set-1", "sqs/2012-11-05/service-2"]
)
def test_botocores_data_is_read_into_plain_dicts_the_same_and_in_the_same_order(name: str) -> None:
    """botocore reads its JSON with an OrderedDict per object; ours reads dicts, twice as fast for the
    1.25 MB endpoints.json every process's first client reads. The same data (gzipped files included)."""
    from botocore.loaders import Loader

    ours, theirs = aws._DirectLoader().load_data(name), Loader().load_data(name)
    assert type(ours) is dict
    assert json.dumps(ours) == json.dumps(theirs)  # keys in the same order, all the way down
    with pytest.raises(botocore.exceptions.DataNotFoundError):
        aws._DirectLoader().load_data(name + "-sqsjobs-missing")


def test_a_model_file_is_found_where_and_in_the_order_botocore_looks(tmp_path: Path) -> None:
    """The file before the file gzipped, a gzipped one alone, and a file holding `null` passed over, as
    botocore's own loader does (a user's AWS_DATA_PATH folder is one of the places it looks)."""
    import gzip

    (tmp_path / "both.json").write_text('{"from": "json"}')
    (tmp_path / "both.json.gz").write_bytes(gzip.compress(b'{"from": "gz"}'))
    (tmp_path / "gz.json.gz").write_bytes(gzip.compress(b'{"from": "gz"}'))
    (tmp_path / "null.json").write_text("null")
    (tmp_path / "null.json.gz").write_bytes(gzip.compress(b'{"from": "gz"}'))
    loader = aws._DirectLoader(extra_search_paths=[str(tmp_path)])
    assert loader.load_data("both") == {"from": "json"}
    assert loader.load_data("gz") == {"from": "gz"}
    assert loader.load_data("null") == {"from": "gz"}


def test_async_dispatchs_client_reads_models_through_sqsjobs_loader(
    fresh_loader: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async web app's first dispatch builds an aiobotocore client: through the loader sqsjobs' own
    clients share (~20 ms), not a new one that lists every service botocore ships first (~50 ms)."""
    import asyncio

    from botocore.loaders import Loader

    from sqsjobs.connections.sqs_async import AsyncSqsSender
    from sqsjobs.settings import Settings

    def refuse(self: Loader, type_name: str) -> list[str]:
        raise AssertionError(f"every service was listed to build a client ({type_name})")

    monkeypatch.setattr(Loader, "list_available_services", refuse)

    async def build() -> str:
        sender = AsyncSqsSender(Settings(connection="sqs"))
        try:
            client = await sender._client()
            return str(client.meta.service_model.service_name)
        finally:
            await sender.aclose()

    assert asyncio.run(build()) == "sqs"
