"""GIVEN a catalog AWS would reject (or accept and then break) WHEN the app is built (``cdk synth``)
THEN it fails before anything is deployed, with a typed error that names the model and what to change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from infra.errors import (
    CatalogError,
    GpuSettingsError,
    MissingArtifactError,
    PackageTooLargeError,
    RecursiveTriggerError,
    TimeoutRuleError,
)
from infra.packaging import PackagingError
from tests.infra.conftest import MB, gpu_entry, lambda_entry

Build = Callable[..., cdk.App]


# --- a model whose artifact + runtime exceeds Lambda's limits without a container target -----------


def test_zip_package_over_250_mb_unzipped_is_refused(build: Build) -> None:
    with pytest.raises(PackageTooLargeError, match=r"'big'.*250 MB zip limit.*package = \"image\""):
        build({"big": lambda_entry(package="zip", memory_mb=4096)}, manifests={"big": 200 * MB})


def test_model_too_large_for_any_lambda_is_sent_to_gpu(build: Build) -> None:
    with pytest.raises(PackageTooLargeError, match=r"'huge'.*target = \"gpu\""):
        build({"huge": lambda_entry(memory_mb=10240)}, manifests={"huge": 6000 * MB})


def test_s3_model_source_needs_room_in_tmp(build: Build) -> None:
    with pytest.raises(PackageTooLargeError, match=r"ephemeral_storage_mb.*at least"):
        build({"from-s3": lambda_entry(model_source="s3", memory_mb=2048)}, manifests={"from-s3": 600 * MB})


def test_memory_too_small_for_the_model_is_refused(build: Build) -> None:
    with pytest.raises(CatalogError, match=r"memory_mb = 512 MB is too small"):
        build({"small": lambda_entry(memory_mb=512)}, manifests={"small": 300 * MB})


def test_auto_package_picks_an_image_instead_of_failing(build: Build) -> None:
    app = build({"big": lambda_entry(memory_mb=4096)}, manifests={"big": 200 * MB})
    stack = next(s for s in app.node.children if isinstance(s, cdk.Stack) and s.stack_name.endswith("model-big"))
    functions = Template.from_stack(stack).find_resources(
        "AWS::Lambda::Function", {"Properties": {"PackageType": "Image"}}
    )
    assert len(functions) == 4


# --- timeouts that break API Gateway (29 s) or SQS (visibility >= 6x timeout) ----------------------


def test_function_timeout_longer_than_api_gateway_is_refused(build: Build) -> None:
    with pytest.raises(TimeoutRuleError, match=r"timeout_s = 60 s.*504"):
        build({"slow": lambda_entry(timeout_s=60)})


def test_integration_timeout_above_29_s_needs_the_quota_raised(build: Build) -> None:
    with pytest.raises(TimeoutRuleError, match=r"api_timeout_s = 60 s.*29 s.*apiTimeoutQuotaS"):
        build({"slow": lambda_entry(timeout_s=60, api_timeout_s=60)})


def test_raised_integration_timeout_quota_is_honoured(build: Build) -> None:
    app = build({"slow": lambda_entry(timeout_s=60, api_timeout_s=60)}, apiTimeoutQuotaS="120", waf="false")
    assert app is not None


def test_queue_visibility_below_6x_the_consumer_timeout_is_refused(build: Build) -> None:
    with pytest.raises(TimeoutRuleError, match=r"queue_visibility_timeout_s = 600 s.*less than 6 x batch_timeout_s"):
        build({"jobs": lambda_entry(batch_timeout_s=300, queue_visibility_timeout_s=600)})


def test_batch_timeout_over_lambdas_maximum_is_refused(build: Build) -> None:
    with pytest.raises(TimeoutRuleError, match=r"batch_timeout_s = 1000 s exceeds Lambda's 900 s"):
        build({"jobs": lambda_entry(batch_timeout_s=1000)})


def test_batch_timeout_shorter_than_the_request_timeout_is_refused(build: Build) -> None:
    with pytest.raises(TimeoutRuleError, match=r"batch_timeout_s = 10 s is shorter than timeout_s = 20 s"):
        build({"jobs": lambda_entry(batch_timeout_s=10)})


def test_long_batch_timeout_is_not_bound_by_api_gateway(build: Build) -> None:
    app = build({"jobs": lambda_entry(batch_timeout_s=900)})  # Lambda's maximum; the queue gets 6x
    stack = next(s for s in app.node.children if isinstance(s, cdk.Stack) and s.stack_name.endswith("model-jobs"))
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::Lambda::Function", {"Handler": "functions.handlers.s3.handler", "Timeout": 900}
    )
    template.has_resource_properties("AWS::SQS::Queue", {"VisibilityTimeout": 5400})


def test_gpu_request_timeout_is_bound_by_api_gateway_too(build: Build) -> None:
    with pytest.raises(TimeoutRuleError, match=r"'gpu'.*timeout_s = 45 s"):
        build({"gpu": gpu_entry(timeout_s=45)})


# --- an S3 output prefix that could re-trigger its own function ------------------------------------


def test_output_prefix_inside_the_watched_input_prefix_is_refused(build: Build) -> None:
    with pytest.raises(RecursiveTriggerError, match=r"'loop'.*its own input_prefix 'inputs/loop/'"):
        build({"loop": lambda_entry(output_prefix="inputs/loop/results/")})


def test_output_prefix_feeding_another_models_input_is_refused(build: Build) -> None:
    models = {
        "first": lambda_entry(output_prefix="inputs/second/"),
        "second": lambda_entry(openai_route=False),
    }
    with pytest.raises(RecursiveTriggerError, match=r"'first'.*model 'second''s input_prefix"):
        build(models)


def test_prefix_without_trailing_slash_is_refused(build: Build) -> None:
    with pytest.raises(CatalogError, match=r"input_prefix 'inputs/a' must be a key prefix ending in '/'"):
        build({"a": lambda_entry(input_prefix="inputs/a")})


# --- a gpu target without the settings it needs ---------------------------------------------------


def test_gpu_target_without_instance_type_and_task_counts_is_refused(build: Build) -> None:
    with pytest.raises(GpuSettingsError, match=r"needs instance_type, min_tasks, max_tasks for target 'gpu'"):
        build({"gpu": gpu_entry(instance_type=None, min_tasks=None, max_tasks=None)})


def test_gpu_target_on_a_cpu_instance_is_refused(build: Build) -> None:
    with pytest.raises(GpuSettingsError, match=r"'m5.xlarge' is not a supported GPU instance"):
        build({"gpu": gpu_entry(instance_type="m5.xlarge")})


def test_gpu_memory_beyond_the_instance_is_refused(build: Build) -> None:
    with pytest.raises(GpuSettingsError, match=r"memory_mb = 16384 does not fit a g5.xlarge"):
        build({"gpu": gpu_entry(memory_mb=16384)})


def test_gpu_service_cannot_scale_from_zero_on_cpu_load(build: Build) -> None:
    with pytest.raises(GpuSettingsError, match=r"min_tasks must be at least 1"):
        build({"gpu": gpu_entry(min_tasks=0)})


def test_gpu_min_above_max_is_refused(build: Build) -> None:
    with pytest.raises(GpuSettingsError, match=r"min_tasks \(3\) > max_tasks \(2\)"):
        build({"gpu": gpu_entry(min_tasks=3)})


# --- the catalog and the manifests themselves ------------------------------------------------------


def test_missing_manifest_names_the_model_and_the_fix(build: Build) -> None:
    with pytest.raises(MissingArtifactError, match=r"'unbuilt'.*maas build unbuilt.*allowMissingArtifacts"):
        build({"unbuilt": lambda_entry()}, manifests={"unbuilt": -1})


def test_missing_manifest_can_be_previewed_explicitly(build: Build) -> None:
    app = build({"unbuilt": lambda_entry()}, manifests={"unbuilt": -1}, allowMissingArtifacts="true")
    stack = next(s for s in app.node.children if isinstance(s, cdk.Stack) and s.stack_name.endswith("model-unbuilt"))
    Template.from_stack(stack).has_resource_properties(
        "AWS::Lambda::Function", {"Environment": {"Variables": {"MAAS_MODELS": "/var/task/artifacts/unbuilt"}}}
    )


def test_manifest_built_for_another_task_is_refused(build: Build, tmp_path: Any) -> None:
    from tests.infra.conftest import write_manifest

    write_manifest(tmp_path / "artifacts", "m", "text-classification", {"model.onnx": MB})
    with pytest.raises(MissingArtifactError, match=r"built for task 'text-classification'.*'sentence-embeddings'"):
        build({"m": lambda_entry("sentence-embeddings")}, manifests={"m": -1})


def test_unknown_deploy_key_is_refused_with_the_allowed_keys(build: Build) -> None:
    with pytest.raises(CatalogError, match=r"unknown deploy key\(s\) memroy_mb; allowed: .*memory_mb"):
        build({"typo": lambda_entry(memroy_mb=1024)})


def test_wrongly_typed_value_is_refused(build: Build) -> None:
    with pytest.raises(CatalogError, match=r"deploy.memory_mb must be an integer, got '2048'"):
        build({"typed": lambda_entry(memory_mb="2048")})


def test_two_models_claiming_one_openai_route_are_refused(build: Build) -> None:
    models = {"a": lambda_entry(openai_route=True), "b": lambda_entry(openai_route=True)}
    with pytest.raises(CatalogError, match=r"models a, b all set openai_route = true for /v1/embeddings"):
        build(models)


def test_strict_packaging_needs_the_prebuilt_lambda_dependencies(build: Build, tmp_path: Any) -> None:
    with pytest.raises(PackagingError, match=r"no runtime dependencies for arm64.*infra.build_deps --arch arm64"):
        build({"m": lambda_entry()}, packaging="strict", lambdaDepsDir=str(tmp_path / "no-deps"))


def test_no_vpc_without_gpu_models(build: Build) -> None:
    app = build({"m": lambda_entry()})
    shared = next(s for s in app.node.children if isinstance(s, cdk.Stack) and s.stack_name.endswith("-shared"))
    Template.from_stack(shared).resource_count_is("AWS::EC2::VPC", 0)
