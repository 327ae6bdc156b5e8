"""What API Gateway (REST) sends and decides, as data: the events, the policy check, the gateway responses.

- :func:`proxy_event`: the Lambda proxy integration's event (format 1.0) for a request, with
  ``requestContext.authorizer`` holding the authorizer's context and principal and ``identity.apiKey`` the usage key;
- :func:`authorizer_event`: a REQUEST authorizer's event;
- :func:`evaluate`: an authorizer policy against the invoked method's ARN (an explicit Deny wins, then an Allow);
- :func:`gateway_response`: a gateway response as API Gateway renders it (simple ``$context`` substitution only:
  its templates are not run through VTL), with API Gateway's defaults for the types a stage does not customize.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from maas_dev.gateway.stage import GatewayResponse, Stage

# API Gateway's own bodies for the responses a stage leaves alone.
DEFAULT_RESPONSES = {
    "UNAUTHORIZED": (401, '{"message":"Unauthorized"}'),
    "ACCESS_DENIED": (403, '{"Message":"User is not authorized to access this resource with an explicit deny"}'),
    "MISSING_AUTHENTICATION_TOKEN": (403, '{"message":"Missing Authentication Token"}'),
    "INVALID_API_KEY": (403, '{"message":"Forbidden"}'),
    "THROTTLED": (429, '{"message":"Too Many Requests"}'),
    "REQUEST_TOO_LARGE": (413, '{"message":"Request Too Long"}'),
    "AUTHORIZER_CONFIGURATION_ERROR": (500, '{"message": null}'),
    "INTEGRATION_FAILURE": (502, '{"message": "Internal server error"}'),
    "INTEGRATION_TIMEOUT": (504, '{"message": "Endpoint request timed out"}'),
}


@dataclass(frozen=True)
class Request:
    """An HTTP request as it reached the stage (path without the stage prefix)."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str = "127.0.0.1"

    def header(self, name: str) -> str | None:
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return found[-1] if found else None


def method_arn(stage: Stage, request: Request) -> str:
    return f"arn:aws:execute-api:{stage.region}:{stage.account}:local/{stage.name}/{request.method}{request.path}"


def _headers(request: Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for key, value in request.headers:
        single[key] = value
        multi.setdefault(key, []).append(value)
    return single, multi


def _query(request: Request) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    if not request.query:
        return None, None
    return {k: v[-1] for k, v in request.query.items()}, {k: list(v) for k, v in request.query.items()}


def _path_parameters(resource: str, path: str) -> dict[str, str] | None:
    if "{proxy+}" not in resource:
        return None
    prefix = resource.split("{proxy+}")[0]
    return {"proxy": path[len(prefix) :]}


def request_context(
    stage: Stage, request: Request, resource: str, *, authorizer: Mapping[str, Any] | None, api_key: str | None
) -> dict[str, Any]:
    now = time.time()
    return {
        "resourceId": "local",
        "resourcePath": resource,
        "httpMethod": request.method,
        "extendedRequestId": uuid.uuid4().hex[:16],
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "path": f"/{stage.name}{request.path}",
        "accountId": stage.account,
        "protocol": "HTTP/1.1",
        "stage": stage.name,
        "domainPrefix": "local",
        "requestTimeEpoch": int(now * 1000),
        "requestId": str(uuid.uuid4()),
        "identity": {"sourceIp": request.source_ip, "userAgent": request.header("user-agent"), "apiKey": api_key},
        "domainName": "localhost",
        "apiId": "local",
        **({"authorizer": dict(authorizer)} if authorizer is not None else {}),
    }


def authorizer_event(stage: Stage, request: Request, resource: str) -> dict[str, Any]:
    headers, multi = _headers(request)
    query, multi_query = _query(request)
    return {
        "type": "REQUEST",
        "methodArn": method_arn(stage, request),
        "resource": resource,
        "path": request.path,
        "httpMethod": request.method,
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": query or {},
        "multiValueQueryStringParameters": multi_query or {},
        "pathParameters": _path_parameters(resource, request.path) or {},
        "stageVariables": {},
        "requestContext": request_context(stage, request, resource, authorizer=None, api_key=None),
    }


def proxy_event(
    stage: Stage, request: Request, resource: str, *, authorizer: Mapping[str, Any] | None, api_key: str | None
) -> dict[str, Any]:
    headers, multi = _headers(request)
    query, multi_query = _query(request)
    content_type = (request.header("content-type") or "").split(";")[0].strip()
    binary = any(fnmatch.fnmatch(content_type, pattern) for pattern in stage.binary_media_types)
    body: str | None
    if not request.body:
        body = None
    elif binary:
        body = base64.b64encode(request.body).decode()
    else:
        body = request.body.decode("utf-8", "replace")
    return {
        "resource": resource,
        "path": request.path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": _path_parameters(resource, request.path),
        "stageVariables": None,
        "requestContext": request_context(stage, request, resource, authorizer=authorizer, api_key=api_key),
        "body": body,
        "isBase64Encoded": binary and body is not None,
    }


def evaluate(policy: Mapping[str, Any], arn: str) -> bool:
    """Whether an authorizer's policy lets the method at ``arn`` be invoked (explicit Deny > Allow > implicit Deny)."""
    allowed = False
    for statement in policy.get("Statement") or []:
        actions = statement.get("Action") or []
        actions = [actions] if isinstance(actions, str) else actions
        if not any(fnmatch.fnmatchcase("execute-api:Invoke", a) for a in actions):
            continue
        resources = statement.get("Resource") or []
        resources = [resources] if isinstance(resources, str) else resources
        if any(fnmatch.fnmatchcase(arn, r) for r in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def gateway_response(
    stage: Stage, kind: str, *, context: Mapping[str, Any] | None = None, message: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a gateway response of ``kind``, as the stage renders it."""
    custom: GatewayResponse | None = stage.gateway_responses.get(kind)
    status, template = DEFAULT_RESPONSES.get(kind, (500, '{"message": null}'))
    headers = {"content-type": "application/json", "x-amzn-errortype": kind.title().replace("_", "")}
    if custom is not None:
        status, template = custom.status, custom.template if custom.template is not None else template
        headers.update(custom.headers)
    values = {f"$context.authorizer.{k}": str(v) for k, v in (context or {}).items()}
    values["$context.error.messageString"] = json.dumps(message)
    values["$context.error.message"] = message
    values["$context.error.responseType"] = kind
    body = template
    for name in sorted(values, key=len, reverse=True):  # longest first: $context.error.message is a prefix
        body = body.replace(name, values[name])
    return status, headers, body.encode("utf-8")
