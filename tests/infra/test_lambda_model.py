"""GIVEN a `lambda` catalog model THEN its stack has the runtime's three handlers sized from the catalog,
arm64 by default, an API route family behind the bearer-key authorizers + usage-plan keys, an S3 notification on
its own input prefix,
and a job queue whose visibility timeout is at least 6x its consumer's timeout with partial batch
failures reported."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tests.infra.conftest import ACCOUNT, REGION, STAGE, Synth, function_handler

HANDLERS = (
    "functions.handlers.http.handler",
    "functions.handlers.s3.handler",
    "functions.handlers.sqs.handler",
    "functions.handlers.chunk.handler",  # the chunked-job state machine's steps
)
BATCH_BUCKET = f"maas-{STAGE}-batch-{ACCOUNT}-{REGION}"


def lambda_models(catalog: dict[str, Any]) -> list[str]:
    return [name for name, entry in catalog.items() if entry["deploy"]["target"] == "lambda"]


@pytest.fixture(scope="module")
def lambda_names(catalog: dict[str, Any]) -> list[str]:
    names = lambda_models(catalog)
    assert names, "the default catalog must have a lambda model"
    return names


def _functions(template: Template) -> dict[str, dict[str, Any]]:
    """The model's maas functions, each with ``Handler`` set to the handler it runs (images included)."""
    return {
        logical_id: {**resource["Properties"], "Handler": function_handler(resource["Properties"])}
        for logical_id, resource in template.find_resources("AWS::Lambda::Function").items()
        if function_handler(resource["Properties"])
    }


def test_four_handlers_sized_from_the_catalog(
    default_app: Synth, catalog: dict[str, Any], lambda_names: list[str]
) -> None:
    for name in lambda_names:
        deploy = catalog[name]["deploy"]
        functions = _functions(default_app.template(f"maas-{STAGE}-model-{name}"))
        assert sorted(f["Handler"] for f in functions.values()) == sorted(HANDLERS)
        for props in functions.values():
            assert props["Architectures"] == [deploy.get("architecture", "arm64")]
            assert props["MemorySize"] == deploy["memory_mb"]
            assert props.get("PackageType") == "Image" or props["Runtime"].startswith("python3.")
            assert props["TracingConfig"] == {"Mode": "Active"}
            assert props["LoggingConfig"]["LogFormat"] == "JSON"
        timeouts = {p["Handler"]: p["Timeout"] for p in functions.values()}
        assert timeouts[HANDLERS[0]] == deploy["timeout_s"]
        for batch_handler in HANDLERS[1:]:
            assert timeouts[batch_handler] == deploy.get("batch_timeout_s", 300) > deploy["timeout_s"]


def test_runtime_environment_contract(default_app: Synth, lambda_names: list[str]) -> None:
    for name in lambda_names:
        for props in _functions(default_app.template(f"maas-{STAGE}-model-{name}")).values():
            env = props["Environment"]["Variables"]
            assert env["MAAS_MODELS"] == f"/var/task/artifacts/{name}"  # bundled in the zip
            assert env["MAAS_CACHE_DIR"] == "/tmp/maas-artifacts"
            assert env["MAAS_BATCH_BUCKET"] == BATCH_BUCKET
            assert env["MAAS_INPUT_PREFIX"] == f"inputs/{name}/"
            assert env["MAAS_OUTPUT_PREFIX"] == f"outputs/{name}/"
            assert env["MAAS_REPLY_ALLOWLIST"] == f"s3://{BATCH_BUCKET}/outputs/{name}/replies/"
            assert env["MAAS_EXPECTED_BUCKET_OWNER"] == ACCOUNT
            # Only the batch handlers keep idempotency records.
            assert ("MAAS_IDEMPOTENCY_TABLE" in env) is (props["Handler"] != HANDLERS[0])
            assert env["POWERTOOLS_SERVICE_NAME"] == f"maas-{name}"
            assert env["POWERTOOLS_METRICS_NAMESPACE"] and env["POWERTOOLS_LOG_LEVEL"] == "INFO"


def test_small_models_ship_as_zip_with_the_artifact(
    default_app: Synth, lambda_names: list[str], catalog: dict[str, Any]
) -> None:
    for name in lambda_names:
        if catalog[name]["task"] == "text-generation":
            continue  # streams: an image whatever its size (tests/infra/test_streaming.py)
        for props in _functions(default_app.template(f"maas-{STAGE}-model-{name}")).values():
            assert props["Code"]["S3Key"].endswith(".zip")
            assert "PackageType" not in props


def test_idempotency_table_matches_powertools(default_app: Synth, lambda_names: list[str]) -> None:
    for name in lambda_names:
        default_app.template(f"maas-{STAGE}-model-{name}").has_resource_properties(
            "AWS::DynamoDB::Table",
            {
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True},
                "BillingMode": "PAY_PER_REQUEST",
                "SSESpecification": {"SSEEnabled": True},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            },
        )


def test_sqs_consumer_reports_item_failures_and_queue_outlives_6x_timeout(
    default_app: Synth, variant_app: Synth
) -> None:
    checked = 0
    for app in (default_app, variant_app):
        for stack_name in app.model_stacks().values():
            resources = app.json(stack_name)["Resources"]
            for mapping in (r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"):
                props = mapping["Properties"]
                assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
                queue = resources[props["EventSourceArn"]["Fn::GetAtt"][0]]["Properties"]
                alias = resources[_ref(props["FunctionName"])]
                assert alias["Type"] == "AWS::Lambda::Alias" and alias["Properties"]["Name"] == "live"
                function = resources[alias["Properties"]["FunctionName"]["Ref"]]["Properties"]
                assert queue["VisibilityTimeout"] >= 6 * function["Timeout"], stack_name
                assert queue["RedrivePolicy"]["maxReceiveCount"] >= 1
                dlq = resources[queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]]
                assert dlq["Type"] == "AWS::SQS::Queue"
                checked += 1
    assert checked >= 4


def test_uploads_reach_the_model_through_eventbridge_rules_on_its_input_prefix(
    default_app: Synth, lambda_names: list[str]
) -> None:
    """The batch bucket notifies EventBridge (no per-stack notification resource); each model's rules match
    Object Created events of that bucket under its own prefix, split by size (tests/infra/test_chunked_jobs.py)."""
    for name in lambda_names:
        template = default_app.template(f"maas-{STAGE}-model-{name}")
        assert not template.find_resources("Custom::S3BucketNotifications")
        rules = template.find_resources("AWS::Events::Rule", {"Properties": {"EventPattern": {"source": ["aws.s3"]}}})
        assert len(rules) == 2, name
        for rule in rules.values():
            pattern = rule["Properties"]["EventPattern"]
            assert pattern["detail-type"] == ["Object Created"]
            assert pattern["detail"]["bucket"] == {"name": [BATCH_BUCKET]}
            assert pattern["detail"]["object"]["key"] == [{"prefix": f"inputs/{name}/"}]
        # Async S3 invocations retry twice, then land in a failure queue (watched by the DLQ alarm).
        template.has_resource_properties(
            "AWS::Lambda::EventInvokeConfig",
            {"MaximumRetryAttempts": 2, "DestinationConfig": {"OnFailure": {"Destination": Match.any_value()}}},
        )


def test_routes_cover_task_api_oip_v2_and_openai(default_app: Synth, lambda_names: list[str]) -> None:
    owners = []
    for name in lambda_names:
        template = default_app.template(f"maas-{STAGE}-model-{name}")
        parts = {r["Properties"]["PathPart"] for r in template.find_resources("AWS::ApiGateway::Resource").values()}
        assert {name, "{proxy+}"} <= parts
        if "embeddings" in parts:
            owners.append(name)
        methods = template.find_resources("AWS::ApiGateway::Method")
        assert len(methods) >= 6
        for method in methods.values():
            props = method["Properties"]
            # the bearer-key authorizer of the route's protocol (shared stack), and the tenant's usage-plan key
            assert props["AuthorizationType"] == "CUSTOM" and props["ApiKeyRequired"] is True
            assert "Fn::ImportValue" in props["AuthorizerId"]
            assert "RequestValidatorId" in props
            assert props["Integration"]["Type"] == "AWS_PROXY"
            assert props["Integration"]["TimeoutInMillis"] <= 29_000
            if props["HttpMethod"] == "POST":
                assert "application/json" in props["RequestModels"]
    assert owners == ["minilm-embed"], "exactly one model owns POST /v1/embeddings"


def test_openai_embeddings_schema_enforces_the_models_limits(default_app: Synth, catalog: dict[str, Any]) -> None:
    limits = catalog["minilm-embed"]["limits"]
    default_app.template(f"maas-{STAGE}-model-minilm-embed").has_resource_properties(
        "AWS::ApiGateway::Model",
        {
            "Schema": Match.object_like(
                {
                    "title": "EmbeddingRequest",
                    "required": ["input", "model"],
                    "properties": Match.object_like(
                        {
                            "input": {
                                "oneOf": [
                                    {"type": "string", "maxLength": limits["max_input_chars"]},
                                    Match.object_like({"type": "array", "maxItems": limits["max_batch"]}),
                                    Match.object_like({"type": "array", "items": {"type": "integer"}}),
                                    Match.object_like({"type": "array", "maxItems": limits["max_batch"]}),
                                ]
                            }
                        }
                    ),
                }
            )
        },
    )


def _ref(value: Any) -> str | None:
    """The logical id a property refers to, however CloudFormation spells it (Ref, or an ARN built from one)."""
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        value = list(value.values())
    if isinstance(value, list):
        return next((found for item in value if (found := _ref(item)) is not None), None)
    return None


def test_every_function_is_invoked_through_its_live_alias_and_keeps_its_versions(
    default_app: Synth, lambda_names: list[str]
) -> None:
    """API Gateway, the EventBridge rules and the SQS event source invoke ``live``, never $LATEST; a deploy
    retains the versions it replaces, so ``maas rollback`` always has somewhere to go back to."""
    for name in lambda_names:
        resources = default_app.json(f"maas-{STAGE}-model-{name}")["Resources"]
        handler_of = {
            k: function_handler(r["Properties"]) for k, r in resources.items() if r["Type"] == "AWS::Lambda::Function"
        }
        aliases = {
            handler_of[r["Properties"]["FunctionName"]["Ref"]]: k
            for k, r in resources.items()
            if r["Type"] == "AWS::Lambda::Alias" and r["Properties"]["Name"] == "live"
        }
        assert set(aliases) == set(HANDLERS), name  # one alias per function
        invoked = {
            _ref(r["Properties"]["FunctionName"])
            for r in resources.values()
            if r["Type"] in ("AWS::Lambda::Permission", "AWS::Lambda::EventSourceMapping")
        }
        assert invoked == set(aliases.values()), name
        api = [
            r["Properties"]["FunctionName"]
            for r in resources.values()
            if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["Principal"] == "apigateway.amazonaws.com"
        ]
        assert api and all(f == {"Ref": aliases["functions.handlers.http.handler"]} for f in api)
        versions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Version"]
        assert len(versions) == 4 and all(v["DeletionPolicy"] == v["UpdateReplacePolicy"] == "Retain" for v in versions)


def test_big_model_becomes_an_x86_container_image_with_provisioned_concurrency(variant_app: Synth) -> None:
    template = variant_app.template(f"maas-{STAGE}-model-big-classifier")
    functions = template.find_resources("AWS::Lambda::Function", {"Properties": {"PackageType": "Image"}})
    assert len(functions) == 4
    commands = sorted(f["Properties"]["ImageConfig"]["Command"][0] for f in functions.values())
    assert commands == sorted(HANDLERS)
    for function in functions.values():
        assert function["Properties"]["Architectures"] == ["x86_64"]
    template.has_resource_properties(
        "AWS::Lambda::Alias", {"Name": "live", "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 2}}
    )
    template.has_resource_properties(
        "AWS::Lambda::Function", {"ReservedConcurrentExecutions": 10, "ImageConfig": {"Command": [HANDLERS[0]]}}
    )


def test_s3_model_source_reads_its_published_version_with_custom_prefixes(variant_app: Synth) -> None:
    template = variant_app.template(f"maas-{STAGE}-model-s3-embedder")
    artifacts = f"maas-{STAGE}-artifacts-{ACCOUNT}-{REGION}"
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": HANDLERS[0],
            "EphemeralStorage": {"Size": 1024},
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "MAAS_MODELS": f"s3://{artifacts}/models/s3-embedder/feedfacecafe0001",
                        "MAAS_INPUT_PREFIX": "inputs/custom-embedder/",
                        "MAAS_REPLY_ALLOWLIST": f"s3://{BATCH_BUCKET}/outputs/custom-embedder/replies/,"
                        f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/maas-replies",
                    }
                )
            },
        },
    )
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "s3:GetObject",
                                "Resource": f"arn:aws:s3:::{artifacts}/models/s3-embedder/feedfacecafe0001/*",
                            }
                        )
                    ]
                )
            }
        },
    )
    # It claimed the OpenAI route (openai_route = true) over the other embedder listed after it.
    parts = {r["Properties"]["PathPart"] for r in template.find_resources("AWS::ApiGateway::Resource").values()}
    assert "embeddings" in parts
