"""Bearer keys for the REST API: the key table, the Lambda authorizer and what API Gateway answers for refusals.

- **Key table** ``maas-<stage>-api-keys``: one item per key, by key id; only the key's SHA-256 is stored, with
  the tenant and the value of the tenant's API Gateway key (see ``functions/web/api_keys.py``). Encrypted with the
  stage's data key, point-in-time recovery on, retained with the stage's data. ``maas keys`` writes it.
- **Authorizer function**: ``functions.handlers.authorizer.handler`` from a zip of the maas source alone (standard
  library + the runtime's boto3), with a role that may only read items of the table (and decrypt them through
  DynamoDB).
- **One REQUEST authorizer per protocol** (task API, OIP, OpenAI), all that function: API Gateway caches answers
  per authorizer, and a refusal's body is rendered in the shape of the protocol of the path it was asked for, so
  a cached refusal must only ever be served on that protocol's routes. With caching on, the ``Authorization``
  header is the identity source (the cache key); a request without it is refused by API Gateway itself (401).
- **Gateway responses**: ``UNAUTHORIZED`` (401, no key at all: API Gateway answers it before any function runs, with
  one static body for every route, ``{"error": "<message>"}``, the shape every stock client reads: OIP's own, which
  ``tritonclient`` needs — it cannot even print an error whose ``error`` is an object — and which the ``openai`` SDK
  turns into an ``AuthenticationError`` as it does OpenAI's object; only the task API's object shape is not matched)
  with a ``WWW-Authenticate: Bearer`` challenge, and ``ACCESS_DENIED`` (403, a key that was refused: the authorizer's
  ``errorBody``, in the route's own protocol shape).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from functions.contract.deployment import API_KEYS_TABLE_ENV, AUTHORIZER_HANDLER, api_keys_table_name
from infra import nag
from infra.constructs.common import data_removal_policy, function_logs_and_role
from infra.constructs.lambda_endpoint import python_runtime
from infra.limits import LAMBDA_PYTHON_VERSION
from infra.settings import EnvironmentConfig

# The protocols of the API, each with its own authorizer (and so its own result cache), by path prefix.
PROTOCOL_PREFIXES = {"openai": "/v1", "oip": "/v2", "task": "/models"}
AUTH_HEADER_SOURCE = "method.request.header.Authorization"
MISSING_KEY_BODY = {"error": "no API key: send 'Authorization: Bearer <key>' (keys come from `maas keys create`)"}
CHALLENGE = "'Bearer realm=\"maas\"'"


def protocol_of(path: str) -> str:
    """The protocol that owns a route path: ``openai`` (/v1), ``oip`` (/v2) or ``task`` (/models)."""
    for protocol, prefix in PROTOCOL_PREFIXES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return protocol
    raise ValueError(f"{path!r} is not below any protocol's prefix ({', '.join(PROTOCOL_PREFIXES.values())})")


@jsii.implements(apigw.IAuthorizer)
class AuthorizerRef:
    """An authorizer of the shared API, by id, for methods that model stacks add to the imported API."""

    def __init__(self, authorizer_id: str) -> None:
        self._authorizer_id = authorizer_id

    @property
    def authorizer_id(self) -> str:
        return self._authorizer_id

    @property
    def authorization_type(self) -> apigw.AuthorizationType:
        return apigw.AuthorizationType.CUSTOM


class ApiAuthorizers(Construct):
    """The key table, the authorizer function, one authorizer per protocol and the refusals' gateway responses."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api: apigw.RestApi,
        settings: EnvironmentConfig,
        data_key: kms.IKey,
        code_dir: Path,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.table = dynamodb.Table(
            self,
            "KeyTable",
            table_name=api_keys_table_name(settings.stage),
            partition_key=dynamodb.Attribute(name="key_id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=data_key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=settings.retain_data,
            removal_policy=data_removal_policy(settings),
        )
        log_group, role = function_logs_and_role(
            self,
            "Authorizer",
            settings,
            description=f"{settings.prefix} API authorizer: reads key records",
            statements=[
                iam.PolicyStatement(
                    sid="ReadKeyRecords", actions=["dynamodb:GetItem"], resources=[self.table.table_arn]
                ),
                iam.PolicyStatement(
                    sid="DataKeyViaDynamoDb",
                    actions=["kms:Decrypt"],
                    resources=[data_key.key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{stack.region}.amazonaws.com"}},
                ),
            ],
        )
        self.function = lambda_.Function(
            self,
            "Authorizer",
            description=f"{settings.prefix} API authorizer (bearer keys)",
            code=lambda_.Code.from_asset(str(code_dir)),
            handler=AUTHORIZER_HANDLER,
            runtime=python_runtime(),
            architecture=lambda_.Architecture.ARM_64,
            memory_size=256,
            timeout=cdk.Duration.seconds(5),
            environment={API_KEYS_TABLE_ENV: self.table.table_name, "POWERTOOLS_LOG_LEVEL": settings.log_level},
            role=role,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
        )
        nag.acknowledge(
            self,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords do not support resource-level permissions",
        )
        nag.acknowledge(
            self,
            "AwsSolutions-L1",
            f"Python {LAMBDA_PYTHON_VERSION} is pinned with the rest of the runtime (infra.limits); bump them together",
        )
        ttl = settings.authorizer_cache_ttl_s
        self.authorizers: dict[str, apigw.CfnAuthorizer] = {}
        for protocol in PROTOCOL_PREFIXES:
            authorizer = apigw.CfnAuthorizer(
                self,
                f"{protocol.title()}Authorizer",
                rest_api_id=api.rest_api_id,
                name=f"{settings.prefix}-{protocol}-keys",
                type="REQUEST",
                authorizer_uri=(
                    f"arn:{stack.partition}:apigateway:{stack.region}:lambda:path/2015-03-31/functions/"
                    f"{self.function.function_arn}/invocations"
                ),
                authorizer_result_ttl_in_seconds=ttl,
                # A cached authorizer requires its identity sources: Authorization is then the cache key. Without
                # caching none is required, so `x-api-key` alone reaches the function too.
                identity_source=AUTH_HEADER_SOURCE if ttl > 0 else None,
            )
            self.function.add_permission(
                f"Invoke{protocol.title()}Authorizer",
                principal=iam.ServicePrincipal("apigateway.amazonaws.com"),
                source_arn=stack.format_arn(
                    service="execute-api",
                    resource=api.rest_api_id,
                    resource_name=f"authorizers/{authorizer.ref}",
                ),
            )
            self.authorizers[protocol] = authorizer
        api.add_gateway_response(
            "MissingKey",
            type=apigw.ResponseType.UNAUTHORIZED,
            status_code="401",
            response_headers={"WWW-Authenticate": CHALLENGE},
            templates={"application/json": json.dumps(MISSING_KEY_BODY)},
        )
        api.add_gateway_response(
            "RefusedKey",
            type=apigw.ResponseType.ACCESS_DENIED,
            status_code="403",
            response_headers={"WWW-Authenticate": "'Bearer realm=\"maas\", error=\"invalid_token\"'"},
            # The authorizer rendered the refusal in the route's protocol shape; API Gateway substitutes it as is.
            templates={"application/json": "$context.authorizer.errorBody"},
        )

    @property
    def ids(self) -> Mapping[str, str]:
        """Authorizer id by protocol."""
        return {protocol: authorizer.ref for protocol, authorizer in self.authorizers.items()}
