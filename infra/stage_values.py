"""Stage config values: each parser takes a TOML or CDK-context value (context values arrive as strings) and
returns it typed, or raises ``EnvironmentConfigError`` naming the key and what it must be."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.errors import EnvironmentConfigError


def strings(value: Any, key: str) -> list[str]:
    """A list of strings from TOML, or from context as JSON (``-c models='["a","b"]'``) or comma-separated."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise EnvironmentConfigError(f"{key} must be a list of strings: {exc}") from exc
        else:
            value = [v.strip() for v in stripped.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise EnvironmentConfigError(f"{key} must be a list of strings, got {value!r}")
    return list(value)


SUBSCRIPTION_RE = re.compile(
    r"^(mailto:[^@\s]+@[^@\s]+\.[^@\s]+|https://\S+|arn:aws[a-z-]*:(sqs|lambda):[a-z0-9-]+:\d{12}:\S+)$"
)


def subscription(value: str) -> str:
    if not SUBSCRIPTION_RE.fullmatch(value):
        raise EnvironmentConfigError(
            f"alarm subscription {value!r} must be mailto:<address>, https://<endpoint>, or an SQS queue or "
            "Lambda function ARN"
        )
    return value


def cidr(value: Any) -> str:
    try:
        network = ipaddress.IPv4Network(str(value))
    except ValueError as exc:
        raise EnvironmentConfigError(f"vpcCidr {value!r} is not an IPv4 CIDR: {exc}") from exc
    if not 16 <= network.prefixlen <= 20:
        raise EnvironmentConfigError(f"vpcCidr {value!r} must be a /16 to /20 (room for four /24+ subnets)")
    return str(network)


def resolve(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def mapping(value: Any, key: str) -> Mapping[str, Any]:
    if isinstance(value, str):  # -c tenants='{"acme": "standard"}'
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise EnvironmentConfigError(f"{key} must be a JSON object: {exc}") from exc
    if not isinstance(value, Mapping):
        raise EnvironmentConfigError(f"{key} must be a table / JSON object, got {value!r}")
    return value


def flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise EnvironmentConfigError(f"{key} must be true or false, got {value!r}")


def integer(value: Any, key: str, *, low: int) -> int:
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < low or (isinstance(value, float) and value != number):
        raise EnvironmentConfigError(f"{key} must be an integer >= {low}, got {value!r}")
    return number


def choice(value: Any, allowed: tuple[str, ...], key: str) -> Any:
    if value not in allowed:
        raise EnvironmentConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    return value
