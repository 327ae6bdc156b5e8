"""Bearer keys for the deployed API: their format, how they are stored, and the decision on a presented key.

Standard library only: the Lambda authorizer (``functions.handlers.authorizer``) ships this module in a zip without
third-party packages, and ``maas keys`` (developer tools) writes the records it reads.

- **Format.** ``maas_<key id>_<secret>``: a 12-hex-digit key id (public: it names the key in ``maas keys list``,
  logs and the authorizer's context) and a 43-character base64url secret (32 random bytes, 256 bits).
- **Storage.** One item per key in the stage's key table, by key id: the SHA-256 of the whole key, never the key;
  the tenant; the value of the tenant's API Gateway key (what its usage plan meters; with the API's key source set
  to the authorizer, that value is an identifier API Gateway never accepts from a caller); a status and times.
- **Why plain SHA-256.** The secret carries 256 random bits: no dictionary or brute force reaches it, whatever
  the hash costs. A slow hash (bcrypt, scrypt) would add tens of milliseconds to every uncached authorization for
  no gain; a peppered HMAC protects low-entropy secrets (passwords), which these are not, at the price of one more
  secret to deploy and rotate. A stolen table yields hashes that open nothing.
- **Checking.** The key id finds the item; the hash of the presented key is compared with the stored one by
  ``hmac.compare_digest``, in constant time. Unknown ids and wrong secrets get the same answer.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

KEY_PREFIX = "maas_"
KEY_ID_HEX = 12
SECRET_BYTES = 32
KEY_PATTERN = re.compile(r"^maas_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
MAX_PRESENTED_CHARS = 512  # anything longer is refused unread

# The key table's attributes (partition key: KEY_ID).
KEY_ID = "key_id"
KEY_HASH = "key_hash"
TENANT = "tenant"
USAGE_KEY = "usage_key"
STATUS = "status"
CREATED_AT = "created_at"  # epoch seconds
EXPIRES_AT = "expires_at"  # epoch seconds; absent = never (set by `maas keys rotate` on the replaced key)
REVOKED_AT = "revoked_at"
DESCRIPTION = "description"
ACTIVE, REVOKED = "active", "revoked"


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: the secret is shown once and only its hash is stored."""

    key: str
    key_id: str
    key_hash: str


def key_hash(key: str) -> str:
    """The stored form of a key: SHA-256 of its UTF-8 bytes, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> NewKey:
    """A new random key (256-bit secret) with its id and hash."""
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return NewKey(key=key, key_id=key_id, key_hash=key_hash(key))


def key_id_of(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = KEY_PATTERN.fullmatch(key)
    return match.group(1) if match else None


class Outcome(StrEnum):
    """Why a request was let through or refused (the code callers see in the error body)."""

    ALLOWED = "allowed"
    MISSING = "missing_api_key"  # 401: no credentials at all
    MALFORMED = "malformed_api_key"  # 403: something was sent, but not a maas key
    INVALID = "invalid_api_key"  # 403: no such key, or a wrong secret
    REVOKED = "revoked_api_key"  # 403: `maas keys revoke`
    EXPIRED = "expired_api_key"  # 403: replaced by `maas keys rotate` and past its grace period


MESSAGES = {
    Outcome.MISSING: "no API key: send 'Authorization: Bearer <key>' (keys come from `maas keys create`)",
    Outcome.MALFORMED: (
        "the credentials are not a maas API key: send 'Authorization: Bearer maas_<id>_<secret>' (or the key alone "
        "in 'x-api-key')"
    ),
    Outcome.INVALID: "the API key is not valid: check it, or ask for a new one (`maas keys create`)",
    Outcome.REVOKED: "the API key was revoked: ask for a new one (`maas keys create`)",
    Outcome.EXPIRED: "the API key was replaced (`maas keys rotate`) and its grace period is over: use the new key",
}


@dataclass(frozen=True)
class Decision:
    """The authorizer's answer about one presented key."""

    outcome: Outcome
    key_id: str | None = None
    tenant: str | None = None
    usage_key: str | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOWED

    @property
    def message(self) -> str:
        return MESSAGES.get(self.outcome, "")


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return None


def presented_key(headers: Mapping[str, Any] | None) -> str | None:
    """The credential a request carries: the token of ``Authorization: Bearer <token>``, else ``x-api-key``.

    An ``Authorization`` header of another scheme is returned whole, so it is refused as malformed rather than
    mistaken for a missing key. None when neither header has a value.
    """
    headers = headers or {}
    authorization = (_header(headers, "authorization") or "").strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else authorization
    api_key = (_header(headers, "x-api-key") or "").strip()
    return api_key or None


Lookup = Callable[[str], Mapping[str, Any] | None]


def decide(presented: str | None, lookup: Lookup, now: float | None = None) -> Decision:
    """Check a presented key against its stored record (``lookup(key_id)``), comparing hashes in constant time."""
    if presented is None:
        return Decision(Outcome.MISSING)
    key_id = key_id_of(presented) if len(presented) <= MAX_PRESENTED_CHARS else None
    if key_id is None:
        return Decision(Outcome.MALFORMED)
    record = lookup(key_id) or {}
    stored = str(record.get(KEY_HASH, ""))
    # compared even when the record is missing (against ""), so an unknown id costs what a wrong secret does
    if not hmac.compare_digest(stored.encode(), key_hash(presented).encode()) or not stored:
        return Decision(Outcome.INVALID, key_id=key_id)
    tenant, usage_key = record.get(TENANT), record.get(USAGE_KEY)
    if record.get(STATUS) != ACTIVE:
        return Decision(Outcome.REVOKED, key_id=key_id, tenant=tenant)
    expires = record.get(EXPIRES_AT)
    if expires is not None and float(expires) <= (time.time() if now is None else now):
        return Decision(Outcome.EXPIRED, key_id=key_id, tenant=tenant)
    if not tenant or not usage_key:
        return Decision(Outcome.INVALID, key_id=key_id)
    return Decision(Outcome.ALLOWED, key_id=key_id, tenant=str(tenant), usage_key=str(usage_key))


# --- error bodies, in the shape of the protocol of the requested path ------------------------------------------
# The same shapes as functions/protocols/{task,oip,openai}/errors.py render (a unit test keeps them equal): the
# authorizer cannot import the protocols (they need FastAPI), and API Gateway sends its refusals before any
# function of the app runs.
def error_body(path: str, status: int, code: str, message: str) -> dict[str, Any]:
    """The error body the protocol that owns ``path`` answers with: OpenAI's under /v1, OIP's under /v2, else the
    task API's."""
    if path == "/v1" or path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    if path == "/v2" or path.startswith("/v2/"):
        return {"error": message}
    return {"error": {"code": code, "message": message, "param": None}}
