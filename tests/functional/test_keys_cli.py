"""GIVEN a deployed stage's key table and its tenants' API Gateway keys (moto) WHEN an operator runs `maas keys
create|list|revoke|rotate` THEN the key is printed once and stored only as a hash beside the tenant's usage-plan
key, the authorizer accepts it, a revoked key is refused, and a rotated key keeps working through its grace period
(or not at all with --grace-hours 0) while the new one works at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from functions.contract.deployment import API_KEYS_TABLE_ENV, api_keys_table_name, tenant_key_name
from functions.handlers import authorizer
from functions.web import api_keys as keys
from maas_dev.cli import app
from tests.conftest import EVENTS_DIR

runner = CliRunner()
REGION = "eu-west-1"
EVENT = json.loads((EVENTS_DIR / "apigw_authorizer_request.json").read_text())


@pytest.fixture
def stage(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv(API_KEYS_TABLE_ENV, api_keys_table_name("dev"))
    monkeypatch.setattr(authorizer, "_table", None)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName=api_keys_table_name("dev"),
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "key_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "key_id", "AttributeType": "S"}],
        )
        apigateway = boto3.client("apigateway", region_name=REGION)
        usage = apigateway.create_api_key(name=tenant_key_name("dev", "demo"), enabled=True)["value"]
        apigateway.create_api_key(name=tenant_key_name("dev", "demo-other"), enabled=True)
        yield {"dynamodb": dynamodb, "usage_key": usage}
    monkeypatch.setattr(authorizer, "_table", None)


def _keys(*args: str) -> Any:
    return runner.invoke(app, ["keys", *args, "--stage", "dev"])


def _created(result: Any) -> str:
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert keys.key_id_of(key), result.output
    return key


def _authorize(key: str) -> dict[str, Any]:
    return authorizer.handler({**EVENT, "headers": {"Authorization": f"Bearer {key}"}}, None)


def test_create_shows_the_key_once_and_stores_only_its_hash(stage: dict[str, Any]) -> None:
    key = _created(_keys("create", "--tenant", "demo", "--description", "ci pipeline"))
    items = stage["dynamodb"].scan(TableName=api_keys_table_name("dev"))["Items"]
    assert len(items) == 1 and key not in json.dumps(items)
    assert items[0]["key_hash"]["S"] == keys.key_hash(key)
    assert items[0]["usage_key"]["S"] == stage["usage_key"]  # the exact tenant's key, not demo-other's
    allowed = _authorize(key)
    assert allowed["principalId"] == "demo" and allowed["usageIdentifierKey"] == stage["usage_key"]
    listing = _keys("list")
    assert listing.exit_code == 0 and keys.key_id_of(key) in listing.output and "ci pipeline" in listing.output
    assert key not in listing.output and keys.key_hash(key) not in listing.output


def test_a_tenant_without_a_usage_plan_key_is_refused(stage: dict[str, Any]) -> None:
    result = _keys("create", "--tenant", "nobody")
    assert result.exit_code == 1 and "has no API key 'maas-dev-nobody'" in result.output


def test_revoke_refuses_the_key(stage: dict[str, Any]) -> None:
    key = _created(_keys("create", "--tenant", "demo"))
    result = _keys("revoke", keys.key_id_of(key) or "")
    assert result.exit_code == 0 and "revoked" in result.output
    assert _authorize(key)["context"]["code"] == "revoked_api_key"
    assert "revoked" in _keys("list").output
    assert _keys("revoke", "ffffffffffff").exit_code == 1


def test_rotate_keeps_the_old_key_through_its_grace_period(stage: dict[str, Any]) -> None:
    old = _created(_keys("create", "--tenant", "demo"))
    new = _created(_keys("rotate", keys.key_id_of(old) or "", "--grace-hours", "2"))
    assert new != old and _authorize(new)["principalId"] == "demo"
    assert _authorize(old)["principalId"] == "demo"  # still within its grace period
    assert "expires" in _keys("list").output  # (the table wraps the rest)
    newest = _created(_keys("rotate", keys.key_id_of(new) or "", "--grace-hours", "0"))
    assert _authorize(new)["context"]["code"] == "revoked_api_key" and _authorize(newest)["principalId"] == "demo"
    assert _keys("rotate", keys.key_id_of(new) or "").exit_code == 1  # a revoked key cannot be rotated
