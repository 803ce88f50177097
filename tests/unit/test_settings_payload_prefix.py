"""SQSJOBS_PAYLOAD_PREFIX names a folder: `sqsjobs` alone would also own `s3://bucket/sqsjobs-backups/...`."""

from __future__ import annotations

import pytest

from sqsjobs import ConfigurationError, load_settings


@pytest.mark.parametrize("prefix", ["sqsjobs", "jobs/payloads", "a"])
def test_a_prefix_that_is_not_a_folder_is_refused_naming_the_setting(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="SQSJOBS_PAYLOAD_PREFIX"):
        load_settings(payload_prefix=prefix)


@pytest.mark.parametrize("prefix", ["sqsjobs/", "team/jobs/", ""])
def test_a_folder_or_the_whole_bucket_is_accepted(prefix: str) -> None:
    assert load_settings(payload_prefix=prefix).payload_prefix == prefix
