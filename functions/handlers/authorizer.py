"""The API's Lambda REQUEST authorizer: bearer keys checked against hashes, tenants metered by their usage plan.

API Gateway calls it before any route of the app (one authorizer per protocol, all this function, each with its own
result cache). For each request it reads the key (``Authorization: Bearer <key>``, else ``x-api-key``) and answers:

- **allowed**: an IAM policy allowing the stage's methods, the tenant as principal, the tenant's usage-plan key as
  ``usageIdentifierKey`` (the API's key source is ``AUTHORIZER``, so usage plans throttle and meter per tenant) and
  ``tenant``/``keyId`` in the context the app's event carries;
- **no key at all**: ``Unauthorized`` (API Gateway's 401 gateway response; with caching on, API Gateway answers it
  itself, before calling this function, since the ``Authorization`` header is then the cache key);
- **a key that is malformed, unknown, revoked or expired**: a deny policy with ``errorBody``, the refusal in the
  shape of the protocol of the requested path, which the 403 gateway response sends as its body.

Standard library and boto3 only (the Lambda runtime provides boto3): its zip holds the maas source and nothing else,
so a cold start costs a boto3 import. It never logs a key, only its id.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from functions.web.api_keys import KEY_ID, Decision, Outcome, decide, error_body, presented_key

# The contract's name (functions.contract.deployment.API_KEYS_TABLE_ENV; a unit test keeps the two equal): the
# contract package imports pydantic, which this function's zip does not carry.
TABLE_ENV = "MAAS_API_KEYS_TABLE"
logger = logging.getLogger("maas.authorizer")
logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO"))


class Unauthorized(Exception):  # API Gateway's contract: the message must be exactly "Unauthorized"
    """Raised for a request without credentials: API Gateway answers 401 with its UNAUTHORIZED gateway response."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


class KeyTable:
    """Reads key records by id (eventually consistent: revocations also wait for the authorizer's cache TTL)."""

    def __init__(self, table_name: str, client: Any = None) -> None:
        self.table_name = table_name
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # provided by the Lambda runtime; imported once, at the first lookup of the environment

            self._client = boto3.client("dynamodb")
        return self._client

    def __call__(self, key_id: str) -> Mapping[str, Any] | None:
        item = self.client.get_item(TableName=self.table_name, Key={KEY_ID: {"S": key_id}}).get("Item")
        if not item:
            return None
        return {name: next(iter(value.values())) for name, value in item.items()}


def _stage_arn(method_arn: str) -> str:
    """``arn:…:execute-api:<region>:<account>:<api>/<stage>/*/*``: what a cached answer must cover (every route of
    this authorizer), from the invoked method's ARN ``arn:…:<api>/<stage>/<METHOD>/<path>``."""
    prefix, _, rest = method_arn.partition("/")
    stage = rest.split("/", 1)[0]
    return f"{prefix}/{stage}/*/*"


def policy(effect: str, method_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": _stage_arn(method_arn)}],
    }


def answer(event: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The authorizer response for ``decision`` (raises :class:`Unauthorized` for a missing key)."""
    method_arn = str(event.get("methodArn", ""))
    if decision.outcome is Outcome.MISSING:
        raise Unauthorized
    if decision.allowed:
        return {
            "principalId": decision.tenant,
            "policyDocument": policy("Allow", method_arn),
            "usageIdentifierKey": decision.usage_key,
            "context": {"tenant": decision.tenant, "keyId": decision.key_id},
        }
    body = error_body(str(event.get("path") or "/"), 403, decision.outcome.value, decision.message)
    return {
        "principalId": "refused",
        "policyDocument": policy("Deny", method_arn),
        "context": {"errorBody": json.dumps(body, separators=(",", ":")), "code": decision.outcome.value},
    }


_table: KeyTable | None = None


def key_table() -> KeyTable:
    """The key table named by the environment (made once per execution environment)."""
    global _table
    if _table is None:
        name = os.environ.get(TABLE_ENV, "")
        if not name:
            raise RuntimeError(f"{TABLE_ENV} is not set: the authorizer cannot check any key")
        _table = KeyTable(name)
    return _table


def authorize(event: Mapping[str, Any], lookup: Any = None) -> dict[str, Any]:
    """Decide on one REQUEST-authorizer event (``lookup`` defaults to the key table)."""
    headers = event.get("headers") if isinstance(event.get("headers"), Mapping) else None
    decision = decide(presented_key(headers), lookup or key_table())
    logger.info(
        json.dumps(
            {
                "message": "authorization",
                "outcome": decision.outcome.value,
                "key_id": decision.key_id,
                "tenant": decision.tenant,
                "path": event.get("path"),
            }
        )
    )
    return answer(event, decision)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return authorize(event)
