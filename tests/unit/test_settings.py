from __future__ import annotations

import pytest

from sqsjobs import ConfigurationError, Settings, load_settings


def test_queues_come_as_a_comma_list_or_a_json_map(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_QUEUES", "high, default")
    assert load_settings().queues == {"high": "high", "default": "default"}
    monkeypatch.setenv("SQSJOBS_QUEUES", '{"high": "https://sqs.eu-west-1.amazonaws.com/1/prod-high"}')
    assert load_settings().queues["high"].startswith("https://")


def test_physical_names_apply_prefix_and_suffix_but_keep_fifo_last() -> None:
    settings = Settings(queue_prefix="app-", queue_suffix="-prod", queues={"urls": "https://x/q"})
    assert settings.physical_queue_name("default") == "app-default-prod"
    assert settings.physical_queue_name("orders.fifo") == "app-orders-prod.fifo"
    assert settings.physical_queue_name("urls") == "https://x/q"
    assert settings.dlq_name("app-orders-prod.fifo") == "app-orders-prod-dlq.fifo"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("SQSJOBS_MAX_DELAY_HOP", "901", "SQSJOBS_MAX_DELAY_HOP"),
        ("SQSJOBS_CONNECTION", "redis", "SQSJOBS_CONNECTION"),
        ("SQSJOBS_TRIES", "0", "SQSJOBS_TRIES"),
        ("SQSJOBS_QUEUES", "{not json", "SQSJOBS_QUEUES"),
        ("SQSJOBS_LOG_LEVEL", "loud", "SQSJOBS_LOG_LEVEL"),
    ],
)
def test_a_wrong_value_fails_at_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=named):
        load_settings()


def test_log_levels_are_logging_names_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_LOG_LEVEL", "debug")
    assert load_settings().log_level == "DEBUG"
    assert Settings(log_level=" Warning ").log_level == "WARNING"


def test_the_standard_aws_retry_settings_are_honoured_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqsjobs import ConfigurationError, aws

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    aws.reset_clients()
    retries = aws.client("sqs").meta.config.retries
    # AWS_MAX_ATTEMPTS counts the first call: 2 means one retry (botocore's `max_attempts` would mean 3).
    assert retries["mode"] == "adaptive" and retries["total_max_attempts"] == 2
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "lots")
    aws.reset_clients()
    with pytest.raises(ConfigurationError, match="AWS_MAX_ATTEMPTS"):
        aws.client("sqs")
