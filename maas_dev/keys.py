"""``maas keys``: bearer keys for a deployed stage, in its key table (``maas-<stage>-api-keys``).

A key belongs to a tenant of the stage (``[tenants]`` in its stage file): creating one looks up the tenant's API
Gateway key (``maas-<stage>-<tenant>``, made by the API stack) and stores its value beside the new key's hash, so
the authorizer can name the tenant's usage plan. The key itself is printed once and stored nowhere.

- ``create``: a new key for a tenant;
- ``list``: every key's id, tenant, status and times (never a secret, never a hash);
- ``revoke``: refused from the next uncached request (the authorizer caches answers for the stage's TTL);
- ``rotate``: a new key for the same tenant; the old one keeps working for a grace period (default 24 h), then is
  refused as expired (``--grace-hours 0`` revokes it at once).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from functions.contract.deployment import api_keys_table_name, tenant_key_name
from functions.web import api_keys as keys


class KeyOperationError(RuntimeError):
    """A key operation that cannot be done as asked; the message says what to change."""


@dataclass(frozen=True)
class KeyInfo:
    """What ``maas keys list`` shows about a key."""

    key_id: str
    tenant: str
    status: str
    created_at: float
    expires_at: float | None
    description: str

    def state(self, now: float | None = None) -> str:
        """``active``, ``revoked``, ``expired`` or ``active (expires in …)``."""
        now = time.time() if now is None else now
        if self.status != keys.ACTIVE:
            return self.status
        if self.expires_at is None:
            return keys.ACTIVE
        if self.expires_at <= now:
            return "expired"
        return f"active (expires in {_duration(self.expires_at - now)})"


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours >= 1 else f"{max(1, round(seconds / 60))} min"


class KeyStore:
    """The stage's key table and its tenants' usage-plan keys, through boto3 clients (DynamoDB, API Gateway)."""

    def __init__(self, stage: str, *, dynamodb: Any, apigateway: Any) -> None:
        self.stage = stage
        self.table = api_keys_table_name(stage)
        self.dynamodb = dynamodb
        self.apigateway = apigateway

    def usage_key(self, tenant: str) -> str:
        """The value of the tenant's API Gateway key (what its usage plan meters)."""
        name = tenant_key_name(self.stage, tenant)
        found = self.apigateway.get_api_keys(nameQuery=name, includeValues=True).get("items", [])
        exact = [item for item in found if item.get("name") == name]
        if not exact:
            raise KeyOperationError(
                f"tenant {tenant!r} has no API key {name!r} in this account and region: add it to the stage's "
                f"[tenants] (tenant = tier) and deploy the API stack, or check --stage and the AWS profile"
            )
        if not exact[0].get("enabled", True):
            raise KeyOperationError(f"the API key {name!r} of tenant {tenant!r} is disabled; enable it first")
        return str(exact[0]["value"])

    def create(self, tenant: str, description: str = "") -> keys.NewKey:
        """A new key for ``tenant``; only its hash is written."""
        usage_key = self.usage_key(tenant)
        new = keys.new_key()
        item = {
            keys.KEY_ID: {"S": new.key_id},
            keys.KEY_HASH: {"S": new.key_hash},
            keys.TENANT: {"S": tenant},
            keys.USAGE_KEY: {"S": usage_key},
            keys.STATUS: {"S": keys.ACTIVE},
            keys.CREATED_AT: {"N": str(int(time.time()))},
        }
        if description:
            item[keys.DESCRIPTION] = {"S": description[:200]}
        self.dynamodb.put_item(
            TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(#id)",
            ExpressionAttributeNames={"#id": keys.KEY_ID},
        )  # fmt: skip
        return new

    def list(self) -> list[KeyInfo]:
        """Every key of the stage, oldest first."""
        found = [_info(item) for item in self._scan()]
        return sorted(found, key=lambda info: (info.created_at, info.key_id))

    def _scan(self) -> Iterator[dict[str, Any]]:
        names = [keys.KEY_ID, keys.TENANT, keys.STATUS, keys.CREATED_AT, keys.EXPIRES_AT, keys.DESCRIPTION]
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ProjectionExpression": ", ".join(f"#{i}" for i in range(len(names))),
            "ExpressionAttributeNames": {f"#{i}": name for i, name in enumerate(names)},
        }
        while True:
            page = self.dynamodb.scan(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get(self, key_id: str) -> KeyInfo:
        item = self.dynamodb.get_item(TableName=self.table, Key={keys.KEY_ID: {"S": key_id}}).get("Item")
        if not item:
            raise KeyOperationError(
                f"no key {key_id!r} in stage {self.stage!r} (see `maas keys list --stage {self.stage}`)"
            )
        return _info(item)

    def revoke(self, key_id: str) -> KeyInfo:
        """Mark a key revoked (kept, for the record)."""
        info = self.get(key_id)
        self.dynamodb.update_item(
            TableName=self.table,
            Key={keys.KEY_ID: {"S": key_id}},
            UpdateExpression="SET #s = :revoked, #at = :now",
            ExpressionAttributeNames={"#s": keys.STATUS, "#at": keys.REVOKED_AT},
            ExpressionAttributeValues={":revoked": {"S": keys.REVOKED}, ":now": {"N": str(int(time.time()))}},
        )
        return KeyInfo(info.key_id, info.tenant, keys.REVOKED, info.created_at, info.expires_at, info.description)

    def rotate(self, key_id: str, grace_s: float) -> tuple[keys.NewKey, KeyInfo]:
        """A new key for the same tenant; the old one expires after ``grace_s`` (revoked now when 0)."""
        old = self.get(key_id)
        if old.status != keys.ACTIVE:
            raise KeyOperationError(f"key {key_id!r} is {old.status}: create a new one instead (`maas keys create`)")
        new = self.create(old.tenant, description=f"rotated from {key_id}")
        if grace_s <= 0:
            return new, self.revoke(key_id)
        expires = int(time.time() + grace_s)
        self.dynamodb.update_item(
            TableName=self.table,
            Key={keys.KEY_ID: {"S": key_id}},
            UpdateExpression="SET #e = :expires",
            ExpressionAttributeNames={"#e": keys.EXPIRES_AT},
            ExpressionAttributeValues={":expires": {"N": str(expires)}},
        )
        return new, KeyInfo(old.key_id, old.tenant, old.status, old.created_at, float(expires), old.description)


def _info(item: dict[str, Any]) -> KeyInfo:
    def value(name: str) -> str | None:
        attribute = item.get(name)
        return next(iter(attribute.values())) if attribute else None

    expires = value(keys.EXPIRES_AT)
    return KeyInfo(
        key_id=value(keys.KEY_ID) or "",
        tenant=value(keys.TENANT) or "",
        status=value(keys.STATUS) or "",
        created_at=float(value(keys.CREATED_AT) or 0),
        expires_at=float(expires) if expires is not None else None,
        description=value(keys.DESCRIPTION) or "",
    )


def key_store(stage: str, *, region: str | None = None, endpoint_url: str | None = None) -> KeyStore:
    """The stage's key store through the default AWS credentials (or a local endpoint such as moto)."""
    import boto3

    session = boto3.session.Session(region_name=region)
    return KeyStore(
        stage,
        dynamodb=session.client("dynamodb", endpoint_url=endpoint_url),
        apigateway=session.client("apigateway", endpoint_url=endpoint_url),
    )
