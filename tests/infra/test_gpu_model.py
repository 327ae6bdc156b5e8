"""GIVEN a `gpu` catalog model THEN uvicorn serves the FastAPI app on ECS GPU capacity (g5/g6, capacity
provider, CPU scaling from min_tasks to max_tasks), health-checked on /v2/health/ready behind a private
NLB and a VPC link, with its own queue worker for S3 and SQS jobs."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tests.infra.conftest import STAGE, Synth

HEALTH = "/v2/health/ready"


@pytest.fixture(scope="module")
def gpu_name(catalog: dict[str, Any]) -> str:
    names = [name for name, entry in catalog.items() if entry["deploy"]["target"] == "gpu"]
    assert names, "the default catalog must have a gpu model"
    return names[0]


@pytest.fixture(scope="module")
def gpu(default_app: Synth, gpu_name: str) -> Template:
    return default_app.template(f"maas-{STAGE}-model-{gpu_name}")


def _containers(template: Template) -> dict[str, dict[str, Any]]:
    containers = {}
    for task in template.find_resources("AWS::ECS::TaskDefinition").values():
        for container in task["Properties"]["ContainerDefinitions"]:
            containers[container["Name"]] = container
    return containers


def test_uvicorn_server_container_reserves_a_gpu_and_is_health_checked(
    gpu: Template, catalog: dict[str, Any], gpu_name: str
) -> None:
    server = _containers(gpu)["server"]
    assert server["Command"][:6] == ["uvicorn", "functions.handlers.http:app", "--host", "0.0.0.0", "--port", "8080"]
    assert server["ResourceRequirements"] == [{"Type": "GPU", "Value": "1"}]
    assert server["MemoryReservation"] == catalog[gpu_name]["deploy"]["memory_mb"]
    assert [m["ContainerPort"] for m in server["PortMappings"]] == [8080]
    assert HEALTH in " ".join(server["HealthCheck"]["Command"])
    env = {item["Name"]: item["Value"] for item in server["Environment"]}
    assert env["MAAS_MODELS"] == f"/app/artifacts/{gpu_name}"
    assert env["MAAS_INPUT_PREFIX"] == f"inputs/{gpu_name}/" and env["MAAS_OUTPUT_PREFIX"] == f"outputs/{gpu_name}/"
    assert env["MAAS_EXECUTION_PROVIDERS"] == "cuda,cpu" and env["MAAS_MICROBATCH"] == "true"
    # stdout goes through FireLens with the EMF header, so the metrics the server prints become CloudWatch metrics
    assert server["LogConfiguration"]["LogDriver"] == "awsfirelens"
    assert server["LogConfiguration"]["Options"]["log_format"] == "json/emf"
    routers = [c for c in _containers(gpu).values() if c.get("FirelensConfiguration", {}).get("Type") == "fluentbit"]
    assert routers and all(c["Essential"] for c in routers)
    gpu.has_resource_properties(
        "AWS::ECS::TaskDefinition", {"NetworkMode": "awsvpc", "RequiresCompatibilities": ["EC2"]}
    )


def test_queue_worker_consumes_the_models_job_queue(gpu: Template) -> None:
    worker = _containers(gpu)["worker"]
    assert worker["Command"] == ["python", "-m", "functions.handlers.worker"]
    assert worker["ResourceRequirements"] == [{"Type": "GPU", "Value": "1"}]
    env = {item["Name"]: item["Value"] for item in worker["Environment"]}
    queue_id = env["MAAS_QUEUE_URL"]["Ref"]
    queue = gpu.to_json()["Resources"][queue_id]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * 300  # 6 x batch_timeout_s (default 300 s)
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 1


def test_gpu_instances_from_a_capacity_provider(gpu: Template, catalog: dict[str, Any], gpu_name: str) -> None:
    deploy = catalog[gpu_name]["deploy"]
    assert deploy["instance_type"].split(".")[0] in {"g5", "g6", "g6e"}
    gpu.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {
                    "InstanceType": deploy["instance_type"],
                    "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
                    "BlockDeviceMappings": [Match.object_like({"Ebs": Match.object_like({"Encrypted": True})})],
                }
            )
        },
    )
    gpu.has_resource_properties("AWS::AutoScaling::AutoScalingGroup", {"MinSize": "0"})
    gpu.has_resource_properties(
        "AWS::ECS::CapacityProvider",
        {
            "AutoScalingGroupProvider": Match.object_like(
                {"ManagedScaling": Match.object_like({"Status": "ENABLED"}), "ManagedTerminationProtection": "ENABLED"}
            )
        },
    )
    gpu.has_resource_properties(
        "AWS::ECS::Service",
        {"CapacityProviderStrategy": [Match.object_like({"Weight": 1})]},
    )


def test_service_scales_on_load_between_min_and_max_tasks(
    gpu: Template, catalog: dict[str, Any], gpu_name: str
) -> None:
    deploy = catalog[gpu_name]["deploy"]
    targets = gpu.find_resources(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {"Properties": {"MinCapacity": deploy["min_tasks"], "MaxCapacity": deploy["max_tasks"]}},
    )
    assert len(targets) >= 1
    # The HTTP service tracks the load its servers report (requests in flight or waiting per task), not CPU.
    gpu.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                {
                    "TargetValue": deploy.get("scale_in_flight_per_task", 8),
                    "CustomizedMetricSpecification": Match.object_like(
                        {
                            "Namespace": "maas",
                            "MetricName": "InFlight",
                            "Statistic": "Average",
                            "Dimensions": [{"Name": "service", "Value": f"maas-{gpu_name}"}],
                        }
                    ),
                }
            ),
        },
    )
    # ... which the server task reports every few seconds
    (server,) = [
        c
        for task in gpu.find_resources("AWS::ECS::TaskDefinition").values()
        for c in task["Properties"]["ContainerDefinitions"]
        if "uvicorn" in c.get("Command", [])
    ]
    env = {e["Name"]: e["Value"] for e in server["Environment"]}
    assert float(env["MAAS_LOAD_METRICS_INTERVAL_S"]) > 0
    # A deploy never resets the count scaling chose.
    for service in gpu.find_resources("AWS::ECS::Service").values():
        assert "DesiredCount" not in service["Properties"]
    # The worker scales on queue backlog, down to zero by default.
    gpu.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {"PolicyType": "StepScaling"})


def test_private_nlb_health_checks_the_ready_endpoint(gpu: Template) -> None:
    gpu.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {
            "Scheme": "internal",
            "Type": "network",
            "LoadBalancerAttributes": Match.array_with([{"Key": "access_logs.s3.enabled", "Value": "true"}]),
        },
    )
    gpu.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "HealthCheckPath": HEALTH,
            "HealthCheckProtocol": "HTTP",
            "HealthCheckPort": "8080",
            "Port": 8080,
            "TargetType": "ip",
        },
    )


def test_api_reaches_the_service_through_a_vpc_link(gpu: Template, gpu_name: str) -> None:
    gpu.resource_count_is("AWS::ApiGateway::VpcLink", 1)
    methods = gpu.find_resources("AWS::ApiGateway::Method")
    assert len(methods) >= 6
    for method in methods.values():
        props = method["Properties"]
        assert props["AuthorizationType"] == "CUSTOM" and props["ApiKeyRequired"] is True
        integration = props["Integration"]
        assert integration["Type"] == "HTTP_PROXY" and integration["ConnectionType"] == "VPC_LINK"
        assert integration["TimeoutInMillis"] <= 29_000
    gpu.has_resource_properties(
        "AWS::ApiGateway::Method",
        {
            "HttpMethod": "POST",
            "Integration": Match.object_like(
                {
                    "Uri": Match.object_like(
                        {"Fn::Join": Match.array_with([Match.array_with([f"/models/{gpu_name}/{{proxy}}"])])}
                    ),
                    "RequestParameters": {"integration.request.path.proxy": "method.request.path.proxy"},
                }
            ),
        },
    )


def test_s3_inputs_are_queued_for_the_worker(gpu: Template, gpu_name: str) -> None:
    """Every upload under the model's prefix (any size: the worker has no timeout) goes to its job queue."""
    assert not gpu.find_resources("Custom::S3BucketNotifications")
    gpu.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {"bucket": Match.any_value(), "object": {"key": [{"prefix": f"inputs/{gpu_name}/"}]}},
            },
            "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [Match.string_like_regexp("JobQueue"), "Arn"]},
                                           "DeadLetterConfig": Match.any_value()})],
        },
    )


def test_generation_model_owns_the_openai_completion_routes(variant_app: Synth) -> None:
    template = variant_app.template(f"maas-{STAGE}-model-generator-gpu")
    template.has_resource_properties(
        "AWS::EC2::LaunchTemplate", {"LaunchTemplateData": Match.object_like({"InstanceType": "g5.2xlarge"})}
    )
    parts = {r["Properties"]["PathPart"] for r in template.find_resources("AWS::ApiGateway::Resource").values()}
    assert {"completions", "chat"} <= parts
    template.has_resource_properties(
        "AWS::ApiGateway::Model", {"Schema": Match.object_like({"title": "ChatCompletionRequest"})}
    )
