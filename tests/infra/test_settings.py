"""GIVEN context, a stage config file and the CLI's environment THEN settings resolve with the documented
precedence (defaults < config file < context) and invalid environments fail with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.errors import EnvironmentConfigError
from infra.settings import REPO_ROOT, load_environment


def _load(context: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    return load_environment(context.get, environ or {})


def test_account_and_region_come_from_the_cli_environment_when_not_in_context() -> None:
    settings = _load({}, {"CDK_DEFAULT_ACCOUNT": "210987654321", "CDK_DEFAULT_REGION": "us-west-2"})
    assert (settings.account, settings.region, settings.stage) == ("210987654321", "us-west-2", "dev")
    assert settings.availability_zones == ("us-west-2a", "us-west-2b")
    assert settings.bucket_name("batch") == "maas-dev-batch-210987654321-us-west-2"


def test_missing_account_says_how_to_provide_it() -> None:
    with pytest.raises(EnvironmentConfigError, match=r"-c account=123456789012"):
        _load({"region": "eu-west-1"})


def test_config_file_overrides_defaults_and_context_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "prod.toml"
    config.write_text('stage = "prod"\nlog_retention_days = 365\n[tenants]\nacme = "premium"\n')
    context = {"configFile": str(config), "account": "123456789012", "region": "eu-west-1", "logRetentionDays": "90"}
    settings = _load(context)
    assert settings.stage == "prod" and settings.prefix == "maas-prod"
    assert settings.log_retention_days == 90  # context wins over the file
    assert dict(settings.tenants) == {"acme": "premium"}
    assert settings.tiers["premium"].quota_period == "MONTH"


def test_shipped_stage_files_are_valid() -> None:
    oncall = '["mailto:oncall@example.com"]'
    for path in sorted((REPO_ROOT / "infra" / "stages").glob("*.toml")):
        base = {"configFile": str(path), "account": "123456789012", "region": "eu-west-1"}
        settings = _load({**base, "alarmSubscriptions": oncall})
        assert settings.stage == path.stem and settings.alarm_subscriptions == ("mailto:oncall@example.com",)


def test_prod_refuses_to_deploy_with_nobody_hearing_its_alarms() -> None:
    prod = {"configFile": str(REPO_ROOT / "infra/stages/prod.toml"), "account": "123456789012", "region": "eu-west-1"}
    with pytest.raises(EnvironmentConfigError, match=r"stage 'prod' requires someone to hear its alarms"):
        _load(prod)


def test_dev_deploys_the_four_lambda_models_and_leaves_the_gpu_model_opt_in() -> None:
    dev = _load(
        {"configFile": str(REPO_ROOT / "infra/stages/dev.toml"), "account": "123456789012", "region": "eu-west-1"}
    )
    assert dev.models == ("minilm-embed", "intent-classifier", "smollm2-chat", "efficientnet-lite0")
    assert dev.require_alarm_subscription is False


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"stage": "Prod!"}, r"stage 'Prod!' must match"),
        ({"tenants": '{"acme": "gold"}'}, r"tenant 'acme' uses unknown tier 'gold'"),
        ({"logRetentionDays": "31"}, r"logRetentionDays must be one of"),
        ({"availabilityZones": "eu-west-1a"}, r"at least two zones"),
        ({"vpcCidr": "10.0.0.0/8"}, r"must be a /16 to /20"),
        ({"stageRateLimit": "10"}, r"below the fastest tier"),
        ({"packaging": "sloppy"}, r"packaging must be one of strict, preview"),
        ({"allowMissingArtifacts": "true", "packaging": "strict"}, r"needs -c packaging=preview"),
        ({"alarmSubscriptions": '["sms:+15550100"]'}, r"must be mailto:<address>, https://<endpoint>"),
        ({"models": "[1, 2]"}, r"models must be a list of strings"),
    ],
)
def test_invalid_settings_are_refused(context: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvironmentConfigError, match=message):
        _load({"account": "123456789012", "region": "eu-west-1", **context})


def test_unknown_key_in_a_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('stage = "dev"\nlog_retension_days = 7\n')
    with pytest.raises(EnvironmentConfigError, match=r"unknown setting\(s\) log_retension_days"):
        _load({"configFile": str(config), "account": "123456789012", "region": "eu-west-1"})
