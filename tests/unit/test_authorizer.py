"""GIVEN the stage's key table (moto) holding keys only as hashes WHEN API Gateway's REQUEST-authorizer event
(events/apigw_authorizer_request.json) reaches the authorizer THEN a good key is allowed for every route of the
stage with the tenant's usage-plan key, a missing key is API Gateway's 401, and a malformed, unknown, revoked or
expired key is a deny whose body has the shape of the requested path's protocol — the very shapes the protocols
render. Hashes are compared in constant time, unknown ids included."""

from __future__ import annotations

import copy
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.contract.deployment import API_KEYS_TABLE_ENV, api_keys_table_name
from functions.handlers import authorizer
from functions.web import api_keys as keys
from tests.conftest import EVENTS_DIR

EVENT = json.loads((EVENTS_DIR / "apigw_authorizer_request.json").read_text())
KEY = EVENT["headers"]["Authorization"].removeprefix("Bearer ")
TABLE = api_keys_table_name("dev")
USAGE_KEY = "u" * 40  # the tenant's API Gateway key value (an identifier: the API's key source is the authorizer)


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv(API_KEYS_TABLE_ENV, TABLE)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        client.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": keys.KEY_ID, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": keys.KEY_ID, "AttributeType": "S"}],
        )
        monkeypatch.setattr(authorizer, "_table", None)
        yield client
        monkeypatch.setattr(authorizer, "_table", None)


def _store(client: Any, key: str, **extra: Any) -> None:
    item = {
        keys.KEY_ID: {"S": keys.key_id_of(key)},
        keys.KEY_HASH: {"S": keys.key_hash(key)},
        keys.TENANT: {"S": "demo"},
        keys.USAGE_KEY: {"S": USAGE_KEY},
        keys.STATUS: {"S": extra.pop("status", keys.ACTIVE)},
        keys.CREATED_AT: {"N": str(int(time.time()))},
        **{name: {"N": str(value)} for name, value in extra.items()},
    }
    client.put_item(TableName=TABLE, Item=item)


def _event(headers: dict[str, str] | None = None, path: str = "/v1/chat/completions") -> dict[str, Any]:
    event = copy.deepcopy(EVENT)
    if headers is not None:
        event["headers"] = {"Host": EVENT["headers"]["Host"], **headers}
    event["path"] = event["resource"] = path
    event["methodArn"] = EVENT["methodArn"].rsplit("/POST/", 1)[0] + f"/POST{path}"
    return event


def test_a_good_key_is_allowed_everywhere_on_the_stage_and_metered_as_its_tenant(table: Any) -> None:
    _store(table, KEY)
    response = authorizer.handler(EVENT, None)
    assert response["principalId"] == "demo"
    assert response["usageIdentifierKey"] == USAGE_KEY
    assert response["context"] == {"tenant": "demo", "keyId": keys.key_id_of(KEY)}
    (statement,) = response["policyDocument"]["Statement"]
    # cached answers cover every route of this authorizer, not just the first one asked
    assert statement == {
        "Action": "execute-api:Invoke",
        "Effect": "Allow",
        "Resource": "arn:aws:execute-api:eu-west-1:123456789012:abc123/dev/*/*",
    }


def test_x_api_key_carries_a_key_too(table: Any) -> None:
    _store(table, KEY)
    assert authorizer.handler(_event({"x-api-key": KEY}), None)["usageIdentifierKey"] == USAGE_KEY
    assert authorizer.handler(_event({"authorization": f"bearer {KEY}"}), None)["principalId"] == "demo"


def test_no_key_is_api_gateways_401(table: Any) -> None:
    for headers in ({}, {"Authorization": "  "}, {"x-api-key": ""}):
        with pytest.raises(authorizer.Unauthorized) as raised:
            authorizer.handler(_event(headers), None)
        assert str(raised.value) == "Unauthorized"  # API Gateway's contract for a 401


def _refusal(response: dict[str, Any]) -> tuple[str, Any]:
    (statement,) = response["policyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Resource"].endswith("/dev/*/*")
    assert "usageIdentifierKey" not in response
    return response["context"]["code"], json.loads(response["context"]["errorBody"])


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed_api_key"),
        ({"Authorization": "Bearer sk-not-a-maas-key"}, "malformed_api_key"),
        ({"Authorization": "Bearer " + "maas_" + "a" * 600}, "malformed_api_key"),
        ({"x-api-key": KEY.replace(KEY[-4:], "AAAA")}, "invalid_api_key"),  # right id, wrong secret
        ({"x-api-key": "maas_ffffffffffff_" + KEY[-43:]}, "invalid_api_key"),  # unknown id
    ],
)
def test_bad_keys_are_denied_with_a_reason(table: Any, headers: dict[str, str], code: str) -> None:
    _store(table, KEY)
    found, body = _refusal(authorizer.handler(_event(headers), None))
    assert found == code
    assert body["error"]["code"] == code and body["error"]["type"] == "invalid_request_error"


def test_revoked_and_expired_keys_are_denied_but_a_rotated_key_works_through_its_grace(table: Any) -> None:
    revoked, expired, rotated = (keys.new_key().key for _ in range(3))
    _store(table, revoked, status=keys.REVOKED)
    _store(table, expired, expires_at=int(time.time()) - 1)
    _store(table, rotated, expires_at=int(time.time()) + 3600)
    assert _refusal(authorizer.handler(_event({"x-api-key": revoked}), None))[0] == "revoked_api_key"
    assert _refusal(authorizer.handler(_event({"x-api-key": expired}), None))[0] == "expired_api_key"
    assert authorizer.handler(_event({"x-api-key": rotated}), None)["principalId"] == "demo"


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v2/models/m/infer", "/models/m/predict", "/v2", "/v1"])
def test_a_refusal_has_the_shape_of_its_paths_protocol(table: Any, path: str) -> None:
    """The same shapes as the protocols' own renderers (the authorizer's zip cannot import them)."""
    from functions.protocols.oip.errors import OIP
    from functions.protocols.openai.errors import OPENAI
    from functions.protocols.task.errors import TASK_API

    _, body = _refusal(authorizer.handler(_event({"Authorization": "Bearer nope"}, path=path), None))
    protocol = OPENAI if path.startswith("/v1") else OIP if path.startswith("/v2") else TASK_API
    assert body == protocol.render(403, "malformed_api_key", keys.MESSAGES[keys.Outcome.MALFORMED], None)


def test_only_hashes_are_stored_and_compared_in_constant_time(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    new = keys.new_key()
    assert keys.key_id_of(new.key) == new.key_id and len(new.key.split("_", 2)[2]) == 43
    _store(table, new.key)
    item = table.get_item(TableName=TABLE, Key={keys.KEY_ID: {"S": new.key_id}})["Item"]
    assert new.key not in json.dumps(item) and item[keys.KEY_HASH]["S"] == new.key_hash
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    authorizer.handler(_event({"x-api-key": new.key}), None)
    authorizer.handler(_event({"x-api-key": "maas_ffffffffffff_" + new.key[-43:]}), None)  # unknown id: compared too
    assert len(compared) == 2


def test_the_authorizer_reads_the_contracts_table_variable() -> None:
    assert authorizer.TABLE_ENV == API_KEYS_TABLE_ENV
