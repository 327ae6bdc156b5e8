"""``maas rollback <model>``: point a deployed model's functions back at an earlier, retained version.

Every function of a Lambda model is invoked through its ``live`` alias, and a deploy retains the versions
it replaces (infra/constructs/lambda_endpoint.py). Rolling back moves each alias — HTTP, S3 and SQS — to
the version before the one it serves now, or to the version that serves a given artifact (``--to
<artifact version>``, the content hash ``maas build`` printed) or a given Lambda version number. Any
weighted routing a canary left on the alias is cleared, so all traffic goes to the chosen version at once.
The functions are found by their tags (``maas:stage``, ``maas:model``, ``maas:function``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from functions.contract.deployment import LIVE_ALIAS, function_tags, version_description


class RollbackError(RuntimeError):
    """The rollback cannot be done as asked; the message says why and what exists."""


@dataclass(frozen=True)
class Move:
    function: str
    kind: str
    from_version: str
    to_version: str


def find_functions(lambda_client: Any, *, stage: str, model: str) -> dict[str, str]:
    """The model's function names by kind (``http``, ``s3``, ``sqs``), found by their tags."""
    found: dict[str, str] = {}
    wanted = {k: v for k, v in function_tags(stage, model, "").items() if k != "maas:function"}
    for page in lambda_client.get_paginator("list_functions").paginate():
        for function in page["Functions"]:
            tags = lambda_client.list_tags(Resource=function["FunctionArn"]).get("Tags", {})
            if all(tags.get(k) == v for k, v in wanted.items()) and "maas:function" in tags:
                found[tags["maas:function"]] = function["FunctionName"]
    if not found:
        raise RollbackError(f"no functions of model {model!r} in stage {stage!r} in this account and region")
    return found


def _versions(lambda_client: Any, function: str) -> dict[int, str]:
    """Published version number → its description."""
    versions: dict[int, str] = {}
    for page in lambda_client.get_paginator("list_versions_by_function").paginate(FunctionName=function):
        for version in page["Versions"]:
            if version["Version"] != "$LATEST":
                versions[int(version["Version"])] = version.get("Description", "")
    return versions


def _target(function: str, current: int, versions: dict[int, str], to: str | None) -> int:
    if to is None:
        earlier = [v for v in versions if v < current]
        if not earlier:
            raise RollbackError(f"{function}: version {current} is the oldest retained version; nothing to go back to")
        return max(earlier)
    if to.isdigit():
        if int(to) not in versions:
            raise RollbackError(f"{function}: no version {to}; retained: {', '.join(map(str, sorted(versions)))}")
        return int(to)
    matches = [v for v, description in versions.items() if description == version_description(to)]
    if not matches:
        served = sorted({d.removeprefix(version_description("")) for d in versions.values() if d})
        raise RollbackError(f"{function}: no version serves artifact {to}; retained artifacts: {', '.join(served)}")
    return max(matches)


def rollback(lambda_client: Any, *, stage: str, model: str, to: str | None = None) -> list[Move]:
    """Move the ``live`` alias of each of the model's functions; returns what moved (checked before any move)."""
    functions = find_functions(lambda_client, stage=stage, model=model)
    plan: list[Move] = []
    for kind, function in sorted(functions.items()):
        alias = lambda_client.get_alias(FunctionName=function, Name=LIVE_ALIAS)
        current = int(alias["FunctionVersion"])
        target = _target(function, current, _versions(lambda_client, function), to)
        plan.append(Move(function, kind, str(current), str(target)))
    for move in plan:
        lambda_client.update_alias(
            FunctionName=move.function,
            Name=LIVE_ALIAS,
            FunctionVersion=move.to_version,
            RoutingConfig={"AdditionalVersionWeights": {}},
        )
    return plan
