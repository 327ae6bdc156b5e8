"""One model's routes on the shared REST API: task API, Open Inference Protocol v2 and OpenAI paths.

Routes are added from the model's own stack to the API the shared stack defines (imported by id),
so a model stack can be deployed, updated or removed without touching another model's routes.
Every method requires an authenticated caller — a bearer key checked by the authorizer of the route's protocol
(``api_auth = "bearer"``, the default) or SigV4 (``"iam"``) — and an API key for the tenant's usage plan (named
by the authorizer, or sent as x-api-key), and validates its request; POST bodies are checked against a JSON
schema derived from the model's limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_apigateway as apigw
from constructs import Construct

from infra import nag
from infra.config import ModelSpec
from infra.constructs.authorizer import AuthorizerRef, protocol_of

COG4_REASONS = {
    "iam": (
        "Methods use IAM (SigV4) authorization plus a per-tenant API key; tenants are IAM principals, no Cognito pool"
    ),
    "bearer": (
        "Methods use a Lambda REQUEST authorizer: bearer keys checked against hashed keys in DynamoDB (maas keys); "
        "tenants are API consumers, not Cognito users"
    ),
}
JSON_SCHEMA = "http://json-schema.org/draft-04/schema#"
IntegrationFactory = Callable[[str, str], apigw.Integration]


@dataclass(frozen=True)
class Route:
    """A path on the API (``{proxy+}`` = anything below) and the HTTP methods it accepts."""

    path: str
    methods: tuple[str, ...]


@dataclass(frozen=True)
class ApiRefs:
    """Ids of the shared API's pieces that model stacks attach to (resolved as cross-stack exports)."""

    rest_api_id: str
    root_resource_id: str
    models_resource_id: str
    v2_models_resource_id: str
    v1_resource_id: str
    body_validator_id: str
    params_validator_id: str
    authorizer_ids: Mapping[str, str] | None = None  # by protocol; None: SigV4 (IAM) authorization


def cog4_reason(api_auth: str) -> str:
    """Why no Cognito user pool authorizes the API (cdk-nag COG4)."""
    return COG4_REASONS[api_auth]


def method_auth(authorizer_ids: Mapping[str, str] | None, path: str) -> dict[str, Any]:
    """How a method at ``path`` authenticates: its protocol's bearer-key authorizer, or SigV4 without one."""
    if authorizer_ids is None:
        return {"authorization_type": apigw.AuthorizationType.IAM}
    return {
        "authorization_type": apigw.AuthorizationType.CUSTOM,
        "authorizer": AuthorizerRef(authorizer_ids[protocol_of(path)]),
    }


def route_table(spec: ModelSpec) -> tuple[Route, ...]:
    """The routes one model answers: ``/models/<name>/*``, ``/v2/models/<name>/*`` and its OpenAI paths."""
    name = spec.name
    return (
        Route(f"/models/{name}", ("GET",)),
        Route(f"/models/{name}/{{proxy+}}", ("GET", "POST")),
        Route(f"/v2/models/{name}", ("GET",)),
        Route(f"/v2/models/{name}/{{proxy+}}", ("GET", "POST")),
        *(Route(path, ("POST",)) for path in spec.openai_paths),
    )


def request_schema(spec: ModelSpec, path: str) -> dict[str, Any]:
    """The JSON schema API Gateway checks a POST body against before the model sees it."""
    limits = spec.limits
    text = {"type": "string", "maxLength": limits.max_input_chars}
    if path == "/v1/embeddings":
        tokens = {"type": "array", "minItems": 1, "items": {"type": "integer"}}
        return {
            "$schema": JSON_SCHEMA,
            "title": "EmbeddingRequest",
            "type": "object",
            "required": ["input", "model"],
            "properties": {
                "model": {"type": "string"},
                # OpenAI's shapes: a string, a batch of strings, one token list, a batch of token lists.
                "input": {
                    "oneOf": [
                        text,
                        {"type": "array", "minItems": 1, "maxItems": limits.max_batch, "items": text},
                        tokens,
                        {"type": "array", "minItems": 1, "maxItems": limits.max_batch, "items": tokens},
                    ]
                },
            },
        }
    if path == "/v1/chat/completions":
        return {
            "$schema": JSON_SCHEMA,
            "title": "ChatCompletionRequest",
            "type": "object",
            "required": ["messages"],
            "properties": {"messages": {"type": "array", "minItems": 1}},
        }
    if path == "/v1/completions":
        return {"$schema": JSON_SCHEMA, "title": "CompletionRequest", "type": "object", "required": ["prompt"]}
    return {"$schema": JSON_SCHEMA, "title": "InferenceRequest", "type": "object"}


class ModelRoutes(Construct):
    """Adds a model's resources and methods to the imported shared API."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: ModelSpec,
        refs: ApiRefs,
        integration: IntegrationFactory,
    ) -> None:
        super().__init__(scope, construct_id)
        api = apigw.RestApi.from_rest_api_attributes(
            self, "Api", rest_api_id=refs.rest_api_id, root_resource_id=refs.root_resource_id
        )
        roots: dict[str, apigw.IResource] = {
            "/models": apigw.Resource.from_resource_attributes(
                self, "ModelsRoot", rest_api=api, resource_id=refs.models_resource_id, path="/models"
            ),
            "/v2/models": apigw.Resource.from_resource_attributes(
                self, "V2ModelsRoot", rest_api=api, resource_id=refs.v2_models_resource_id, path="/v2/models"
            ),
            "/v1": apigw.Resource.from_resource_attributes(
                self, "V1Root", rest_api=api, resource_id=refs.v1_resource_id, path="/v1"
            ),
        }
        validators = {
            "body": apigw.RequestValidator.from_request_validator_id(self, "BodyValidator", refs.body_validator_id),
            "params": apigw.RequestValidator.from_request_validator_id(
                self, "ParamsValidator", refs.params_validator_id
            ),
        }
        nag.acknowledge(self, "AwsSolutions-COG4", cog4_reason("iam" if refs.authorizer_ids is None else "bearer"))
        self._authorizer_ids = refs.authorizer_ids
        self.methods: list[apigw.Method] = []
        created: dict[str, apigw.IResource] = dict(roots)
        for route in route_table(spec):
            resource = self._resource(created, route.path)
            for http_method in route.methods:
                self.methods.append(self._method(spec, api, resource, route.path, http_method, validators, integration))

    def _resource(self, created: dict[str, apigw.IResource], path: str) -> apigw.IResource:
        """Find or create the resource for ``path`` below the deepest shared root it starts with."""
        if path in created:
            return created[path]
        parent_path, _, part = path.rpartition("/")
        parent = self._resource(created, parent_path)
        created[path] = parent.add_resource(part)
        return created[path]

    def _method(
        self,
        spec: ModelSpec,
        api: apigw.IRestApi,
        resource: apigw.IResource,
        path: str,
        http_method: str,
        validators: Mapping[str, apigw.IRequestValidator],
        integration: IntegrationFactory,
    ) -> apigw.Method:
        models: dict[str, apigw.IModel] | None = None
        if http_method == "POST":
            title = request_schema(spec, path)["title"]
            model = apigw.Model(
                self,
                "Schema" + "".join(part.capitalize() for part in re.findall(r"[A-Za-z0-9]+", path)),
                rest_api=api,
                content_type="application/json",
                description=f"{spec.name}: {title} for {path}",
                schema=apigw.JsonSchema(**_schema_kwargs(request_schema(spec, path))),
            )
            models = {"application/json": model}
        return resource.add_method(
            http_method,
            integration(http_method, path),
            **method_auth(self._authorizer_ids, path),
            api_key_required=True,
            request_validator=validators["body" if models else "params"],
            request_models=models,
            request_parameters={"method.request.path.proxy": True} if path.endswith("{proxy+}") else None,
        )


def _schema_kwargs(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a plain JSON-schema dict into :class:`apigw.JsonSchema` keyword arguments."""
    names = {
        "$schema": "schema",
        "maxLength": "max_length",
        "minItems": "min_items",
        "maxItems": "max_items",
        "oneOf": "one_of",
    }
    types = {
        "object": apigw.JsonSchemaType.OBJECT,
        "array": apigw.JsonSchemaType.ARRAY,
        "string": apigw.JsonSchemaType.STRING,
        "integer": apigw.JsonSchemaType.INTEGER,
    }
    out: dict[str, Any] = {}
    for key, value in schema.items():
        arg = names.get(key, key)
        if key == "$schema":
            out[arg] = apigw.JsonSchemaVersion.DRAFT4
        elif key == "type":
            out[arg] = types[value]
        elif key == "properties":
            out[arg] = {k: apigw.JsonSchema(**_schema_kwargs(v)) for k, v in value.items()}
        elif key == "items":
            out[arg] = apigw.JsonSchema(**_schema_kwargs(value))
        elif key == "oneOf":
            out[arg] = [apigw.JsonSchema(**_schema_kwargs(v)) for v in value]
        else:
            out[arg] = value
    return out


def generation_methods(spec: ModelSpec) -> list[tuple[str, str]]:
    """``(path, method)`` of every route of a text-generation model (none for other tasks): each gets the usage
    plans' generation throttle, and streams its response."""
    if not spec.streams:
        return []
    return [(route.path, method) for route in route_table(spec) for method in route.methods]


def routes_fingerprint(specs: list[ModelSpec], *, api_auth: str = "iam") -> str:
    """A stable description of every route and its integration settings: a change forces a redeploy."""
    return json.dumps(
        {
            "auth": api_auth,
            "models": [
                {
                    "model": s.name,
                    "target": s.target,
                    "timeout": s.deploy.api_timeout_s,
                    "stream": s.streams,
                    "routes": [[r.path, list(r.methods)] for r in route_table(s)],
                    "schemas": {r.path: request_schema(s, r.path) for r in route_table(s) if "POST" in r.methods},
                }
                for s in specs
            ],
        },
        sort_keys=True,
    )
