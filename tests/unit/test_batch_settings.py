"""Batch configuration is refused at init when it could loop or write where it should not."""

from __future__ import annotations

import importlib

import pytest

from functions.batch.exceptions import BatchConfigError, ReplyRefusedError
from functions.batch.replies import QueueDestination, ReplyAllowList, S3Destination, allowlist_for
from functions.errors import SettingsError
from functions.settings import Settings, get_settings


@pytest.mark.parametrize(
    ("input_prefix", "output_prefix", "why"),
    [
        ("inputs/", "inputs/out/", "overlaps"),  # outputs inside the watched prefix
        ("inputs/", "inputs/", "overlaps"),  # equal prefixes
        ("data/", "data/inputs/", "overlaps"),
        ("data/in/", "data/", "overlaps"),  # the input prefix inside the output prefix
        ("inputs/", "", "empty"),  # whole bucket
        ("", "outputs/", "empty"),
        ("inputs", "inputs-out/", "must be a folder"),  # S3 prefix 'inputs' matches 'inputs-out/...'
        ("inputs/", "/outputs/", "must be a folder"),
    ],
)
def test_unsafe_prefixes_are_refused_with_a_clear_error(input_prefix, output_prefix, why):
    # GIVEN a layout where outputs could trigger the input rule WHEN settings load THEN they are refused
    with pytest.raises(SettingsError, match=why):
        Settings(input_prefix=input_prefix, output_prefix=output_prefix)


def test_disjoint_prefixes_are_accepted():
    settings = Settings(input_prefix="jobs/in/", output_prefix="jobs/out/")
    assert settings.idempotency_prefix == "jobs/out/.idempotency/"


def test_handler_refuses_to_start_with_an_overlapping_output_prefix(monkeypatch):
    # GIVEN the function's environment names an output prefix inside the input prefix
    monkeypatch.setenv("MAAS_OUTPUT_PREFIX", "inputs/results/")
    monkeypatch.setenv("MAAS_MODELS", "")
    get_settings.cache_clear()
    try:
        # WHEN Lambda imports the handler (its init phase) THEN it fails before handling any event
        with pytest.raises(SettingsError, match="S3 event loop"):
            import functions.handlers.s3 as module

            importlib.reload(module)
    finally:
        get_settings.cache_clear()


def test_expected_bucket_owner_must_be_an_account_id():
    with pytest.raises(SettingsError, match="12-digit"):
        Settings(expected_bucket_owner="my-account")


def test_allowlist_entry_inside_the_input_prefix_is_refused():
    with pytest.raises(BatchConfigError, match="overlaps the input prefix"):
        allowlist_for(Settings(batch_bucket="jobs", reply_allowlist="s3://jobs/inputs/replies/"))


def test_malformed_allowlist_entry_is_refused():
    with pytest.raises(BatchConfigError, match="MAAS_REPLY_ALLOWLIST entry 'ftp://x'"):
        allowlist_for(Settings(reply_allowlist="ftp://x"))


QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/results"


def test_allowlist_covers_prefixes_by_whole_segments_and_queues_exactly():
    allow = ReplyAllowList.parse(f"s3://results-bucket/team-a, {QUEUE}")
    assert allow.resolve("s3://results-bucket/team-a/run-1/") == S3Destination("results-bucket", "team-a/run-1/")
    assert allow.resolve("s3://results-bucket/team-a") == S3Destination("results-bucket", "team-a/")
    assert allow.resolve(QUEUE + "/") == QueueDestination(QUEUE)
    for refused in (
        "s3://results-bucket/team-a-evil/",  # string prefix, not a path prefix
        "s3://results-bucket/",  # wider than allowed
        "s3://other-bucket/team-a/",
        "s3://results-bucket/team-a/../team-b/",  # traversal
        "https://sqs.eu-west-1.amazonaws.com/123456789012/results-2",
        "https://evil.example.com/123456789012/results",
        "http://sqs.eu-west-1.amazonaws.com/123456789012/results",  # not TLS
        "s3://results-bucket\uff0fteam-a/",  # urllib raises ValueError on this netloc
        42,
    ):
        with pytest.raises(ReplyRefusedError):
            allow.resolve(refused)


def test_empty_allowlist_refuses_everything():
    with pytest.raises(ReplyRefusedError, match="allow-list"):
        ReplyAllowList.parse("").resolve("s3://results-bucket/x/")


def test_every_variable_infra_writes_is_a_setting_the_runtime_reads(monkeypatch):
    """GIVEN the contract's environment (what infra puts on a function) WHEN the runtime loads its settings from
    exactly those variables THEN every MAAS_* value arrives in the field of the same name."""
    from functions.contract.deployment import RuntimeEnvironment

    environment = RuntimeEnvironment(
        models="/var/task/artifacts/m",
        batch_bucket="jobs",
        input_prefix="in/",
        output_prefix="out/",
        reply_allowlist="s3://jobs/out/replies/",
        expected_bucket_owner="123456789012",
        idempotency_table="t",
        idempotency_ttl_seconds=3600,
        execution_providers="cuda,cpu",
        microbatch=True,
        microbatch_wait_ms=3.0,
        queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/q",
        service_name="maas-m",
        load_metrics_interval_s=10.0,
        request_timeout_s=25.0,
        batch_memory_mb=4096,
        chunk_bytes=5_994_090,
        job_event_bus="default",
        message_budget_s=600,
    )
    fields = RuntimeEnvironment.maas_fields()
    assert set(fields) <= set(Settings.model_fields)
    for name, value in environment.variables().items():
        monkeypatch.setenv(name, value)
    loaded = Settings()
    for name in fields:
        assert str(getattr(loaded, name)) == str(getattr(environment, name)), name
