"""GIVEN the shared stack THEN data at rest is encrypted and private, TLS is enforced, access is logged,
the batch bucket separates inputs/ from outputs/, and the API is defined with request validation."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tests.infra.conftest import ACCOUNT, REGION, STAGE, Synth

SHARED = f"maas-{STAGE}-shared"


@pytest.fixture(scope="module")
def shared(default_app: Synth) -> Template:
    return default_app.template(SHARED)


def _bucket(template: Template, role: str) -> tuple[str, dict[str, Any]]:
    name = f"maas-{STAGE}-{role}-{ACCOUNT}-{REGION}"
    found = template.find_resources("AWS::S3::Bucket", {"Properties": {"BucketName": name}})
    assert len(found) == 1, f"no bucket named {name}"
    return next(iter(found.items()))


def _policy_statements(template: Template, bucket_id: str) -> list[dict[str, Any]]:
    policies = template.find_resources("AWS::S3::BucketPolicy", {"Properties": {"Bucket": {"Ref": bucket_id}}})
    assert len(policies) == 1
    statements: list[dict[str, Any]] = next(iter(policies.values()))["Properties"]["PolicyDocument"]["Statement"]
    return statements


@pytest.mark.parametrize("role", ["artifacts", "batch"])
def test_data_buckets_are_kms_encrypted_private_logged_and_tls_only(shared: Template, role: str) -> None:
    bucket_id, bucket = _bucket(shared, role)
    props = bucket["Properties"]
    encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert encryption["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]["Fn::GetAtt"][1] == "Arn"
    assert encryption["BucketKeyEnabled"] is True
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    logs_id, _ = _bucket(shared, "logs")
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}
    statements = _policy_statements(shared, bucket_id)
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
    ), "bucket policy must deny non-TLS requests"


def test_artifact_bucket_is_versioned(shared: Template) -> None:
    _, bucket = _bucket(shared, "artifacts")
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}


def test_batch_bucket_separates_inputs_and_outputs(shared: Template) -> None:
    _, bucket = _bucket(shared, "batch")
    prefixes = {rule.get("Prefix") for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert {"inputs/", "outputs/"} <= prefixes


def test_access_log_bucket_accepts_nlb_logs_only_from_this_account(shared: Template) -> None:
    logs_id, bucket = _bucket(shared, "logs")
    assert bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {"SSEAlgorithm": "AES256"}  # the only encryption S3/NLB log delivery accepts
    delivery = [
        s
        for s in _policy_statements(shared, logs_id)
        if s.get("Principal") == {"Service": "delivery.logs.amazonaws.com"}
    ]
    assert delivery and all(s["Condition"]["StringEquals"]["aws:SourceAccount"] == ACCOUNT for s in delivery)


def test_data_key_rotates_and_alarm_topic_is_encrypted(shared: Template) -> None:
    shared.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    shared.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": Match.object_like({"Fn::GetAtt": Match.array_with(["Arn"])})}
    )


def test_rest_api_is_regional_and_validates_requests(shared: Template) -> None:
    shared.has_resource_properties(
        "AWS::ApiGateway::RestApi",
        # bearer keys (the default): the authorizer names each tenant's usage-plan key
        {
            "Name": f"maas-{STAGE}-api",
            "EndpointConfiguration": {"Types": ["REGIONAL"]},
            "ApiKeySourceType": "AUTHORIZER",
        },
    )
    shared.has_resource_properties(
        "AWS::ApiGateway::RequestValidator", {"ValidateRequestBody": True, "ValidateRequestParameters": True}
    )


def test_model_listing_route_needs_a_key_and_a_usage_plan(shared: Template, catalog: dict[str, Any]) -> None:
    method = shared.find_resources("AWS::ApiGateway::Method", {"Properties": {"HttpMethod": "GET"}})
    assert len(method) == 1
    props = next(iter(method.values()))["Properties"]
    assert props["AuthorizationType"] == "CUSTOM" and props["ApiKeyRequired"] is True
    openai = shared.find_resources("AWS::ApiGateway::Authorizer", {"Properties": {"Name": f"maas-{STAGE}-openai-keys"}})
    assert props["AuthorizerId"] == {"Ref": next(iter(openai))}  # /v1: OpenAI's authorizer (its error shape)
    listing = props["Integration"]["IntegrationResponses"][0]["ResponseTemplates"]["application/json"]
    assert all(f'"id": "{name}"' in listing for name in catalog)


def test_vpc_has_flow_logs_and_private_subnets_for_gpu_models(shared: Template) -> None:
    shared.resource_count_is("AWS::EC2::VPC", 1)
    shared.has_resource_properties(
        "AWS::EC2::FlowLog", {"TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"}
    )
    shared.has_resource_properties("AWS::EC2::Subnet", {"MapPublicIpOnLaunch": False})
    shared.has_resource_properties("AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"})


def test_shared_alarms_watch_the_api_stage(shared: Template) -> None:
    dims = Match.array_with([{"Name": "ApiName", "Value": f"maas-{STAGE}-api"}, {"Name": "Stage", "Value": STAGE}])
    shared.has_resource_properties("AWS::CloudWatch::Alarm", {"MetricName": "5XXError", "Dimensions": dims})
    shared.has_resource_properties(
        "AWS::CloudWatch::Alarm", {"MetricName": "Latency", "ExtendedStatistic": "p99", "Dimensions": dims}
    )
    shared.has_resource_properties("AWS::CloudWatch::Dashboard", {"DashboardName": f"maas-{STAGE}-overview"})
